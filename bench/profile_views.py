"""Profile the projector on one view: ``python -m bench.profile_views [view] [orders]``.

Fills a demo shop's log as the projection section does, then runs the real
:class:`~workers.runner.ProjectorRunner` with that one view from empty to caught up, while
``py-spy`` (the ``bench`` dependency group) records this process. Prints the wall time, the
CPU time of this process (the projector) and of each store's server process over the same
span (SecantusDB for the read models, the PostgreSQL backends for the others, Redis), and
the projector's top functions, so it says which share of the cost is the server's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.profile import top
from bench.projection import demo_log, time_runner
from bench.servers import VENV_BIN

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far, from ``/proc`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def pids_matching(*needles: str) -> list[int]:
    """Processes whose command line holds every one of ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(n in cmdline for n in needles):
            found.append(int(entry.name))
    return found


def with_children(pids: list[int]) -> list[int]:
    """``pids`` and their descendants (uvicorn's workers are children of its supervisor)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    found, frontier = set(pids), set(pids)
    while frontier:
        frontier = {child for child, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return sorted(found)


def spy_on(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` (all threads, idle ones left out) until interrupted."""
    return subprocess.Popen(
        [
            str(VENV_BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def postgres_backends(database: str) -> list[int]:
    """The backend processes serving ``database`` (their titles name it)."""
    return pids_matching("postgres:", f" {database} ")


async def main(view: str = "read_models", orders: int = 3000) -> None:
    redis_url = os.environ.get("BENCH_REDIS_URL")
    if redis_url is None:
        from bench.common import durable_redis

        with durable_redis() as url:
            await _profile(url, view, orders)
    else:
        await _profile(redis_url, view, orders)


async def _profile(redis_url: str, view: str, orders: int) -> None:
    async with demo_log(redis_url, 200, 200, orders, seed=77) as demo:
        heads = await demo.store.heads()
        events = await demo.store.count()
        mongo_port = demo.mongo_url.rsplit(":", 1)[1]
        servers = {
            "secantusd": pids_matching("secantusd", f"--port {mongo_port}"),
            "redis": pids_matching("redis-server", f":{redis_url.rsplit(':', 1)[1].split('/')[0]}"),
        }
        with tempfile.TemporaryDirectory(prefix="ssprofv-") as tmp:
            out = Path(tmp) / "spy.txt"
            server_out = Path(tmp) / "server.txt"
            spies = [spy_on(os.getpid(), out)]
            if view == "read_models" and servers["secantusd"]:
                spies.append(spy_on(servers["secantusd"][0], server_out))
            await asyncio.sleep(1.0)
            database = demo.dsn.rsplit("/", 1)[1]
            before = {name: sum(map(cpu_seconds, pids)) for name, pids in servers.items()}
            pg_first = {p: cpu_seconds(p) for p in postgres_backends(database)}
            pg_last = dict(pg_first)

            async def sample_postgres() -> None:
                """The backends come and go with the view's pool: poll their CPU."""
                while True:
                    for pid in postgres_backends(database):
                        pg_last[pid] = cpu_seconds(pid) or pg_last.get(pid, 0.0)
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample_postgres())
            own_before = time.process_time()
            seconds = await time_runner(demo.stack, demo.store.redis, view, 500, heads)
            own = time.process_time() - own_before
            sampler.cancel()
            after = {name: sum(map(cpu_seconds, pids)) for name, pids in servers.items()}
            pg = sum(v - pg_first.get(p, 0.0) for p, v in pg_last.items())
            for spy in spies:
                spy.send_signal(2)
                spy.wait(timeout=30)
            own_top, total_top = top(out, 30) if out.exists() else ([], [])
            server_top = top(server_out, 40) if server_out.exists() else ([], [])
    print(f"{view}: {events} events in {seconds:.2f} s = {events / seconds:.0f} events/s")
    print(f"CPU over that span: projector (this process) {own:.2f} s")
    for name in servers:
        print(f"  {name}: {after[name] - before[name]:.2f} s")
    print(f"  postgres backends of the database: {pg:.2f} s")
    print("\ntop own time (% of samples)")
    for frame, pct in own_top:
        print(f"{pct:5.1f}%  {frame}")
    print("\ntop total time (% of samples)")
    for frame, pct in total_top:
        print(f"{pct:5.1f}%  {frame}")
    for title, rows in (("own", server_top[0]), ("total", server_top[1])):
        print(f"\nSecantusDB server: top {title} time (% of samples)")
        for frame, pct in rows:
            print(f"{pct:5.1f}%  {frame}")


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "read_models",
            int(sys.argv[2]) if len(sys.argv) > 2 else 3000,
        )
    )
