"""The peer: our durable appends ÷ pyeventsourcing's on PostgreSQL, same machine, same run.

Both sides write the same thing: a new aggregate's first event, a 2-line ``OrderBilled``
(ours: :meth:`EventStore.append` with ``expect={order: 0}``, one FCALL; the peer: a new
``Order`` aggregate created with the same lines and ``Application.save``, one INSERT
transaction with its optimistic-concurrency check). Durability is comparable: our Redis
fsyncs its AOF on every write (``appendfsync always``), the peer's PostgreSQL commits with
``fsync=on`` and ``synchronous_commit=on`` (the server's settings are read and reported).

Two figures per side: sequential (one writer, each append waits for the previous one) and
concurrent: ``writers`` writers spread over ``processes`` client processes (by default one
per core, as the API runs one worker per core), the same on both sides. In each process
ours are asyncio tasks on one event store whose appends share one pipelined connection, as
in an API worker (:mod:`events.multiplexed`); the peer's are threads sharing one
``Application`` and its connection pool, pyeventsourcing being synchronous. Every process
sets up first, then all start together; the rate is all events over the time from the
first start to the last finish. The single-process figures (all writers in one process)
are reported too, as ``*_concurrent_one_process_per_s``.
pyeventsourcing comes from the ``bench`` dependency group of the lock (``make bench``
installs it); without it the section is skipped.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import urlparse

import asyncpg

from bench.append import sample_order
from bench.common import Timer, rate
from bench.servers import PG_ADMIN_DSN, drop_prefix, postgres_database
from events.connection import connect
from events.keys import Keys
from events.multiplexed import Multiplexed
from events.store import Append, EventStore

Span = tuple[float, float]
"""(start, finish) of one client process's measured run, on the machine's monotonic clock."""


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _spans_rate(events: int, spans: list[Span]) -> float:
    return rate(events, max(end for _, end in spans) - min(start for start, _ in spans))


def _in_processes(
    target: Any, args: tuple[Any, ...], events: int, writers: int, processes: int
) -> float:
    """Run ``target(*args, events_i, writers_i, barrier, results)`` in ``processes`` spawned
    processes sharing ``events`` and ``writers``; the combined rate."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    procs = [
        context.Process(target=target, args=(*args, n, w, barrier, results))
        for n, w in zip(_shares(events, processes), _shares(writers, processes), strict=True)
    ]
    for proc in procs:
        proc.start()
    spans: list[Span] = []
    deadline = time.monotonic() + 600
    try:
        # A client that dies before the barrier leaves the others waiting at it for good:
        # watch the exit codes while the results come in, and break the barrier.
        while len(spans) < len(procs):
            try:
                spans.append(results.get(timeout=1))
            except queue.Empty:
                if failed := [p.exitcode for p in procs if p.exitcode]:
                    raise RuntimeError(f"a bench client process failed ({failed})") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("the bench client processes did not finish") from None
    finally:
        barrier.abort()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return _spans_rate(events, spans)


async def _append_with(store: EventStore, events: int, writers: int) -> float:
    """``events`` new orders appended by ``writers`` concurrent tasks; the seconds taken."""
    left = [events]

    async def writer() -> None:
        while left[0] > 0:
            left[0] -= 1
            order = sample_order()
            await store.append(Append(events=[order], expect={order.aggregate(): 0}))

    with Timer() as timer:
        await asyncio.gather(*(writer() for _ in range(writers)))
    return timer.seconds


def _our_client(
    redis_url: str, prefix: str, events: int, writers: int, barrier: Barrier, results: Any
) -> None:
    """One client process of our concurrent run (an API worker's store)."""

    async def main() -> Span:
        client = connect(redis_url)
        calls = Multiplexed.serving(client)
        store = EventStore(client, Keys(prefix=prefix, partitions=8), calls=calls)
        try:
            await store.identity()
            await _append_with(store, 1, 1)  # connected and warm before the start
            await asyncio.to_thread(barrier.wait)
            started = time.monotonic()
            await _append_with(store, events, writers)
            return started, time.monotonic()
        finally:
            if calls is not None:
                await calls.aclose()
            await client.aclose()

    results.put(_run_loop(main()))


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def ours(
    redis_url: str, events: int, writers: int, processes: int
) -> tuple[float, float, float]:
    """(sequential, concurrent in one process, concurrent in ``processes``) appends per
    second through our event store, on the API's pipelined connection."""
    prefix = f"ssbench:{uuid.uuid4().hex[:8]}"
    client = connect(redis_url)
    calls = Multiplexed.serving(client)
    store = EventStore(client, Keys(prefix=prefix, partitions=8), calls=calls)
    await store.load_functions()
    try:
        sequential = await _append_with(store, events, 1)
        one_process = await _append_with(store, events, writers)
        spread = await asyncio.to_thread(
            _in_processes, _our_client, (redis_url, prefix), events, writers, processes
        )
    finally:
        if calls is not None:
            await calls.aclose()
        await client.aclose()
        await drop_prefix(redis_url, prefix)
    return rate(events, sequential), rate(events, one_process), spread


def _peer_app(dsn: str, pool_size: int) -> tuple[Any, Any]:
    """pyeventsourcing's application on ``dsn`` and one append (a new ``Order``), as a function."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Order(Aggregate):
        @event("Billed")
        def __init__(self, account_id: str, lines: list[dict[str, Any]], total: int) -> None:
            self.account_id = account_id
            self.lines = lines
            self.total = total

    url = urlparse(dsn)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "4",
        "CREATE_TABLE": "y",
    }
    app = Application(env=env)

    def one() -> None:
        order = sample_order()
        lines = [
            {"product_id": ln.product_id, "quantity": ln.quantity, "unit_price": ln.unit_price}
            for ln in order.lines
        ]
        app.save(Order(account_id=order.account_id, lines=lines, total=order.total))

    return app, one


def _threads(one: Any, events: int, writers: int) -> float:
    """``events`` calls of ``one`` by ``writers`` threads; the seconds taken."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writers) as pool:
        for future in [pool.submit(one) for _ in range(events)]:
            future.result()
    return time.perf_counter() - started


def _peer(dsn: str, events: int, writers: int) -> tuple[float, float, str]:
    """(sequential, concurrent in one process, version) for pyeventsourcing on PostgreSQL."""
    from importlib import metadata

    app, one = _peer_app(dsn, writers)
    try:
        started = time.perf_counter()
        for _ in range(events):
            one()
        sequential = time.perf_counter() - started
        concurrent = _threads(one, events, writers)
    finally:
        app.close()
    return rate(events, sequential), rate(events, concurrent), metadata.version("eventsourcing")


def _peer_client(dsn: str, events: int, writers: int, barrier: Barrier, results: Any) -> None:
    """One client process of the peer's concurrent run."""
    app, one = _peer_app(dsn, writers)
    try:
        one()  # connected and warm before the start
        barrier.wait()
        started = time.monotonic()
        _threads(one, events, writers)
        results.put((started, time.monotonic()))
    finally:
        app.close()


async def run(
    redis_url: str, events: int = 3000, writers: int = 32, processes: int | None = None
) -> dict[str, Any]:
    try:
        import eventsourcing.postgres  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"pyeventsourcing is not installed ({exc.name}): make bench installs it"}
    processes = processes or os.cpu_count() or 1
    our_seq, our_one, our_conc = await ours(redis_url, events, writers, processes)
    async with postgres_database() as dsn:
        peer_seq, peer_one, version = await asyncio.to_thread(_peer, dsn, events, writers)
        peer_conc = await asyncio.to_thread(
            _in_processes, _peer_client, (dsn,), events, writers, processes
        )
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        pg = {
            name: await admin.fetchval(f"SHOW {name}")
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        }
    finally:
        await admin.close()
    return {
        "ours_sequential_per_s": our_seq,
        "peer_sequential_per_s": peer_seq,
        "ours_concurrent_per_s": our_conc,
        "peer_concurrent_per_s": peer_conc,
        "ours_concurrent_one_process_per_s": our_one,
        "peer_concurrent_one_process_per_s": peer_one,
        "append_vs_peer": round(our_seq / peer_seq, 2) if peer_seq else None,
        "concurrent_append_vs_peer": round(our_conc / peer_conc, 2) if peer_conc else None,
        "limit": f"pyeventsourcing {version} on PostgreSQL {pg['server_version']}, same machine"
        " and run",
        "ratio": round(our_seq / peer_seq, 2) if peer_seq else None,
        "params": {
            "events": events,
            "writers": writers,
            "processes": processes,
            "event": "a new aggregate's first event: a 2-line OrderBilled",
            "ours": "EventStore.append, expect version 0, one FCALL on the API's pipelined"
            " connection; private redis-server, appendonly yes, appendfsync always;"
            f" concurrent: {writers} asyncio tasks over {processes} client processes",
            "peer": f"eventsourcing {version} Application.save of a new Order aggregate,"
            " PERSISTENCE_MODULE=eventsourcing.postgres (psycopg 3, pooled), a fresh database;"
            f" concurrent: {writers} threads over {processes} client processes, each process"
            " one Application and its pool",
            "postgresql": pg,
            "cores": os.cpu_count(),
        },
    }
