"""Profile ``streamshop rebuild``: ``python -m bench.profile_rebuild [events] [view …]
[--no-profile] [--no-split] [--default-gc]``.

Fills a demo shop's log as the rebuild section does, then rebuilds each view once under
``cProfile`` (``--no-profile``: at full speed; ``--no-split``: the replay in one
process), timing the rebuild's phases (setup, replay, catch-up, switch, hand-over) and
reading the CPU time of this process and of the store's server processes (SecantusDB, the
PostgreSQL backends of the database) over the same span from ``/proc``. Prints, per view,
the phases, the CPU split and the top functions by own and by cumulative time.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import workers.rebuild as rebuild_module
from app.gc_tuning import tune_gc
from bench.profile_views import cpu_seconds, pids_matching, postgres_backends
from bench.projection import demo_log
from workers.rebuild import Progress, RebuildOptions, rebuild_view

VIEWS = ("read_models", "audit", "warehouse")


def _timed(phases: dict[str, float], name: str, fn: Callable[..., Awaitable[Any]]) -> Any:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - started

    return wrapper


async def _profile(
    redis_url: str, events: int, views: list[str], profile: bool = True, split: bool = True
) -> None:
    accounts, products = max(events // 50, 10), max(events // 100, 10)
    async with demo_log(redis_url, accounts, products, events - accounts - products, 91) as demo:
        logged = await demo.store.count()
        mongo_port = demo.mongo_url.rsplit(":", 1)[1]
        database = demo.dsn.rsplit("/", 1)[1]
        for view in views:
            phases: dict[str, float] = {}
            patched = {
                name: getattr(rebuild_module, name)
                for name in (
                    "drop_leftovers",
                    "replay",
                    "replay_split",
                    "catch_up",
                    "flush",
                    "_switch",
                    "hand_over",
                )
            }
            for name, fn in patched.items():
                setattr(rebuild_module, name, _timed(phases, name, fn))
            servers = {
                "secantusd": pids_matching("secantusd", f"--port {mongo_port}"),
                "redis": pids_matching("redis-server"),
            }
            before = {k: sum(map(cpu_seconds, v)) for k, v in servers.items()}
            pg_first = {p: cpu_seconds(p) for p in postgres_backends(database)}
            pg_last = dict(pg_first)

            async def sample_postgres() -> None:
                while view != "read_models":  # noqa: B023
                    for pid in postgres_backends(database):
                        pg_last[pid] = cpu_seconds(pid) or pg_last.get(pid, 0.0)  # noqa: B023
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample_postgres())
            profiler = cProfile.Profile()
            own = time.process_time()
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            options = RebuildOptions() if split else RebuildOptions(split_from=None)
            if profile:
                profiler.enable()
            try:
                report = await rebuild_view(
                    demo.stack.settings(), view, options, Progress(view, enabled=False)
                )
            finally:
                profiler.disable()
                own = time.process_time() - own
                done = resource.getrusage(resource.RUSAGE_CHILDREN)
                child = (done.ru_utime + done.ru_stime) - (children.ru_utime + children.ru_stime)
                sampler.cancel()
                for name, fn in patched.items():
                    setattr(rebuild_module, name, fn)
            after = {k: sum(map(cpu_seconds, v)) for k, v in servers.items()}
            pg = sum(v - pg_first.get(p, 0.0) for p, v in pg_last.items())
            print(f"\n=== {view}: {logged} events in {report.seconds:.3f} s", end="")
            print(f" = {report.events_per_s} events/s", "(under cProfile)" if profile else "")
            print("phases (s): " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()))
            print(f"CPU s: rebuild process {own:.2f}, its child {child:.2f}, ", end="")
            print(f"postgres backends {pg:.2f}, ", end="")
            print(", ".join(f"{k} {after[k] - before[k]:.2f}" for k in servers))
            for order in ("tottime", "cumulative") if profile else ():
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(22)
                text = out.getvalue()
                print(text[text.find("   ncalls") :])


async def main(events: int, views: list[str], profile: bool, split: bool) -> None:
    redis_url = os.environ.get("BENCH_REDIS_URL")
    if redis_url is None:
        from bench.common import durable_redis

        with durable_redis() as url:
            await _profile(url, events, views, profile, split)
    else:
        await _profile(redis_url, events, views, profile, split)


if __name__ == "__main__":
    args = sys.argv[1:]
    profile = "--no-profile" not in args  # phases and CPU only, at full speed
    split = "--no-split" not in args  # the replay in one process (workers.replay_split)
    args = [a for a in args if a not in ("--no-profile", "--no-split")]
    count = int(args.pop(0)) if args and args[0].isdigit() else 5000
    if "--default-gc" in args:  # CPython's collector thresholds, not streamshop rebuild's
        args.remove("--default-gc")
    else:
        tune_gc()
    asyncio.run(main(count, args or list(VIEWS), profile, split))
