"""End-to-end lag: from a command's HTTP response to its event being visible in each view,
under a steady command load, with the real API and projector processes running.

Load: ``POST /orders`` sent open-loop at a fixed rate (default 500/s) by
:mod:`bench.loadgen` in its own process; a request due behind more than a second of backlog
is skipped and counted, so the achieved rate is reported next to the target. Each response
carries its read-your-writes ``position``. Meanwhile this process polls every view's
checkpoints (the same ones read-your-writes queries wait on) every ``poll_ms``; an event is
visible at the first poll, finished after the response, whose checkpoint covers it. The
poll's finish time is used, so a lag is over-stated by at most one poll interval plus a
query time.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pymongo.errors
from pymongo import AsyncMongoClient

from app.auth import build_jwt_auth, issue_token
from app.passwords import Passwords
from app.settings import AuthSettings
from bench.loadgen import Request, open_loop
from bench.profile_views import cpu_seconds, pids_matching, with_children
from bench.servers import Stack, api_server, drop_prefix, mongo_server, postgres_database, projector
from events.connection import connect
from events.positions import parse_position, parse_stream_id
from events.store import EventStore
from projections.audit import AuditProjection
from projections.base import SinkUnavailable
from projections.read_models import ReadModelsProjection
from projections.views import postgres_pool
from projections.warehouse import WarehouseProjection
from workers.commands.demo import populate
from workers.demo import make_shop

VIEWS = ("read_models", "audit", "warehouse")
CHEAP_AUTH = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
Checkpoints = dict[int, str | None]
Sample = tuple[float, Checkpoints]


# -- the load, in its own process ------------------------------------------------------------


def order_request(tokens: list[str], products: list[str]) -> Callable[[int], Request]:
    """Request ``n``: 1-3 random lines (quantity 1-3) for account ``n mod accounts``."""

    def make(n: int) -> Request:
        rng = random.Random(n)
        lines = [
            {"product_id": p, "quantity": rng.randint(1, 3)}
            for p in rng.sample(products, rng.randint(1, 3))
        ]
        headers = {
            "Authorization": f"Bearer {tokens[n % len(tokens)]}",
            "Content-Type": "application/json",
        }
        return "POST", "/orders", headers, json.dumps({"lines": lines}).encode()

    return make


async def _load_async(
    base: str,
    tokens: list[str],
    products: list[str],
    rate_per_s: float,
    seconds: float,
    warmup: float,
    connections: int,
) -> dict[str, Any]:
    make = order_request(tokens, products)
    backlog = int(rate_per_s)  # more than a second of waiting requests: the server is overrun
    if warmup > 0:
        await open_loop(
            base,
            make,
            rate=rate_per_s,
            seconds=warmup,
            connections=connections,
            max_backlog=backlog,
        )
    result = await open_loop(
        base, make, rate=rate_per_s, seconds=seconds, connections=connections, max_backlog=backlog
    )
    done = [
        (o.due, o.answered, json.loads(o.body)["position"])
        for o in result.outcomes
        if o.status == 201
    ]
    return {
        "done": done,
        "errors": result.failures + sum(1 for o in result.outcomes if o.status != 201),
        "skipped": result.skipped,
        "seconds": result.seconds,
    }


def _load(*args: Any) -> dict[str, Any]:
    return asyncio.run(_load_async(*args))


# -- visibility --------------------------------------------------------------------------------


async def poll_checkpoints(
    views: dict[str, Callable[[], Awaitable[Checkpoints]]],
    samples: dict[str, list[Sample]],
    stop: asyncio.Event,
    poll_ms: int,
) -> None:
    """Record (time the read returned, checkpoints) per view until ``stop``."""

    async def read(name: str, checkpoints: Callable[[], Awaitable[Checkpoints]]) -> None:
        with contextlib.suppress(SinkUnavailable, asyncpg.UndefinedTableError):
            result = await checkpoints()
            samples[name].append((time.time(), result))

    while not stop.is_set():
        await asyncio.gather(*(read(n, c) for n, c in views.items()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_ms / 1000)


def visible_at(samples: list[Sample], partitions: int) -> Callable[[float, dict[int, str]], float]:
    """A function (response time, wanted position) → time of the first covering sample."""
    times = [t for t, _ in samples]
    marks = {p: [parse_stream_id(c.get(p) or "0-0") for _, c in samples] for p in range(partitions)}

    def at(answered: float, wanted: dict[int, str]) -> float:
        index = bisect.bisect_left(times, answered)
        for p, entry in wanted.items():
            index = max(index, bisect.bisect_left(marks[p], parse_stream_id(entry)))
        return times[index] if index < len(times) else float("inf")

    return at


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def caught_up(
    views: dict[str, Callable[[], Awaitable[Checkpoints]]],
    heads: Checkpoints,
    within: float = 120.0,
) -> bool:
    wanted = {p: h for p, h in heads.items() if h}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ok = True
        for checkpoints in views.values():
            try:
                done = await checkpoints()
            except (SinkUnavailable, asyncpg.UndefinedTableError, pymongo.errors.PyMongoError):
                ok = False
                break
            if any(
                parse_stream_id(done.get(p) or "0-0") < parse_stream_id(h)
                for p, h in wanted.items()
            ):
                ok = False
                break
        if ok:
            return True
        await asyncio.sleep(0.1)
    return False


# -- the section ---------------------------------------------------------------------------


async def run_load(base: str, *args: Any) -> dict[str, Any]:
    """The load process (spawned: a fresh interpreter, not a fork of this event loop)."""
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return await loop.run_in_executor(pool, _load, base, *args)  # type: ignore[no-any-return]


async def measure(
    views: dict[str, Callable[[], Awaitable[Checkpoints]]],
    store: EventStore,
    base: str,
    load_args: tuple[Any, ...],
    poll_ms: int,
) -> tuple[dict[str, list[Sample]], dict[str, Any], bool]:
    """Poll the views while the load runs and until they drained; (samples, load, drained)."""
    samples: dict[str, list[Sample]] = {v: [] for v in views}
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_checkpoints(views, samples, stop, poll_ms))
    try:
        load = await run_load(base, *load_args)
        drained = await caught_up(views, await store.heads())
    finally:
        stop.set()
        await poller
    for name, checkpoints in views.items():  # the state after draining, for the last events
        samples[name].append((time.time(), await checkpoints()))
    return samples, load, drained


async def run(
    redis_url: str,
    rate_per_s: float = 500.0,
    duration: float = 15.0,
    warmup: float = 3.0,
    workers: int | None = None,
    poll_ms: int = 10,
    connections: int = 64,
) -> dict[str, Any]:
    workers = workers or os.cpu_count() or 1
    client = connect(redis_url)
    async with contextlib.AsyncExitStack() as resources:
        mongo_url = resources.enter_context(mongo_server())
        logs = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="ssbench-lag-")))
        dsn = await resources.enter_async_context(postgres_database())
        stack = Stack.new(redis_url, mongo_url=mongo_url, pg_dsn=dsn)
        resources.push_async_callback(drop_prefix, redis_url, stack.prefix)
        resources.push_async_callback(client.aclose)
        settings = stack.settings()
        store = EventStore(client, settings.redis.keys)
        await store.load_functions()
        shop = make_shop(64, 200, 0, seed=505, stock=10**8)
        await populate(store, shop, hash_password=Passwords(CHEAP_AUTH).hash)
        auth = build_jwt_auth(settings)
        tokens = [issue_token(auth, a.account_id, "customer", 3600) for a in shop.accounts]
        products = [p.product_id for p in shop.products]
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
        resources.push_async_callback(mongo.close)
        pool = await resources.enter_async_context(postgres_pool(dsn, max_size=4))
        views: dict[str, Callable[[], Awaitable[Checkpoints]]] = {
            "read_models": ReadModelsProjection(mongo[stack.mongo_db]).checkpoints,
            "audit": AuditProjection(pool).checkpoints,
            "warehouse": WarehouseProjection(pool).checkpoints,
        }
        projector_proc = resources.enter_context(projector(stack, logs / "projector.log"))
        base = resources.enter_context(api_server(stack, workers, logs / "api.log"))
        if not await caught_up(views, await store.heads()):
            raise RuntimeError("the projector did not fold the setup events in time")
        load_args = (tokens, products, rate_per_s, duration, warmup, connections)
        watched = {
            "mongo_server": pids_matching("secantusd", f"--port {mongo_url.rsplit(':', 1)[1]}"),
            "projector": [projector_proc.pid],
            "api": with_children(pids_matching("uvicorn", f"--port {base.rsplit(':', 1)[1]}")),
        }
        cpu_before = {k: sum(map(cpu_seconds, v)) for k, v in watched.items()}
        wall_before = time.monotonic()
        samples, load, drained = await measure(views, store, base, load_args, poll_ms)
        wall = time.monotonic() - wall_before
        cpu_share = {
            k: round((sum(map(cpu_seconds, v)) - cpu_before[k]) / wall, 2)
            for k, v in watched.items()
        }
    done: list[tuple[float, float, str]] = load["done"]
    result: dict[str, Any] = {
        "target_commands_per_s": rate_per_s,
        "achieved_commands_per_s": round(len(done) / duration, 1),
        "commands": len(done),
        "errors": load["errors"],
        "skipped_overrun": load["skipped"],
        "command_p50_ms": round(percentile([a - d for d, a, _ in done], 0.5) * 1000, 1),
        "command_p99_ms": round(percentile([a - d for d, a, _ in done], 0.99) * 1000, 1),
    }
    worst = 0.0
    for view in VIEWS:
        at = visible_at(samples[view], stack.partitions)
        lags = [at(answered, parse_position(pos)) - answered for _, answered, pos in done]
        seen = [lag * 1000 for lag in lags if lag != float("inf")]
        result[f"{view}_lag_p50_ms"] = round(percentile(seen, 0.5), 1)
        result[f"{view}_lag_p99_ms"] = round(percentile(seen, 0.99), 1)
        result[f"{view}_lag_max_ms"] = round(max(seen, default=0.0), 1)
        if len(seen) < len(lags):
            result[f"{view}_not_visible"] = len(lags) - len(seen)
        worst = max(worst, result[f"{view}_lag_p99_ms"])
    return {
        **result,
        "limit": "targets: lag p99 ≤ 500 ms (read models), ≤ 250 ms (audit, warehouse) at a steady 500 commands/s",
        "ratio": round(worst / 250, 3),
        "params": {
            "duration_s": duration,
            "warmup_s": warmup,
            "load": f"POST /orders open loop at {rate_per_s}/s from bench.loadgen (asyncio,"
            f" {connections} keep-alive connections) in a separate process; a request due"
            " behind a second of backlog is skipped and counted (skipped_overrun)",
            "command_latency": "from the time a request was due to its response",
            "server": f"uvicorn --factory app.main:create_app --workers {workers}",
            "projector": "one `streamshop project` process, all three views, default batch 500",
            "poll_ms": poll_ms,
            "visibility": "first checkpoint poll after the response that covers the event"
            " (finish time of the poll)",
            "drained": drained,
            "redis": "private redis-server, appendonly yes, appendfsync always",
            "mongodb": "SecantusDB (secantusd-py) on a temporary on-disk store",
            "ratio": "worst view's p99 ÷ 250 ms",
            "cpu_cores_used": cpu_share,
            "cpu_cores_used_meaning": "CPU seconds ÷ wall seconds over the measurement, per"
            " process group (mongo_server: SecantusDB; api: the uvicorn processes; 1.0 = one"
            " core busy all the time)",
        },
    }
