"""The peer: our durable appends ÷ pyeventsourcing's on PostgreSQL, same machine, same run.

Both sides write the same thing: a new aggregate's first event, a 2-line ``OrderBilled``
(ours: :meth:`EventStore.append` with ``expect={order: 0}``, one FCALL; the peer: a new
``Order`` aggregate created with the same lines and ``Application.save``, one INSERT
transaction with its optimistic-concurrency check). Durability is comparable: our Redis
fsyncs its AOF on every write (``appendfsync always``), the peer's PostgreSQL commits with
``fsync=on`` and ``synchronous_commit=on`` (the server's settings are read and reported).

Two figures per side: sequential (one writer, each append waits for the previous one) and
concurrent (``writers`` writers: asyncio tasks on one Redis connection pool for us, threads
sharing the application's connection pool for the peer, pyeventsourcing being synchronous).
pyeventsourcing comes from the ``bench`` dependency group of the lock (``make bench``
installs it); without it the section is skipped.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import asyncpg

from bench.append import sample_order
from bench.common import Timer, rate
from bench.servers import PG_ADMIN_DSN, drop_prefix, postgres_database
from events.connection import connect
from events.keys import Keys
from events.store import Append, EventStore


async def ours(redis_url: str, events: int, writers: int) -> tuple[float, float]:
    """(sequential, concurrent) appends per second through our event store."""
    prefix = f"ssbench:{uuid.uuid4().hex[:8]}"
    client = connect(redis_url, max_connections=writers + 4)
    store = EventStore(client, Keys(prefix=prefix, partitions=8))
    await store.load_functions()

    async def one() -> None:
        order = sample_order()
        await store.append(Append(events=[order], expect={order.aggregate(): 0}))

    try:
        with Timer() as sequential:
            for _ in range(events):
                await one()
        left = [events]

        async def writer() -> None:
            while left[0] > 0:
                left[0] -= 1
                await one()

        with Timer() as concurrent:
            await asyncio.gather(*(writer() for _ in range(writers)))
    finally:
        await client.aclose()
        await drop_prefix(redis_url, prefix)
    return rate(events, sequential.seconds), rate(events, concurrent.seconds)


def _peer(dsn: str, events: int, writers: int) -> tuple[float, float, str]:
    """(sequential, concurrent, version) for pyeventsourcing on PostgreSQL, in threads."""
    from importlib import metadata

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
        "POSTGRES_POOL_SIZE": str(writers),
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

    try:
        started = time.perf_counter()
        for _ in range(events):
            one()
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=writers) as pool:
            for future in [pool.submit(one) for _ in range(events)]:
                future.result()
        concurrent = time.perf_counter() - started
    finally:
        app.close()
    return rate(events, sequential), rate(events, concurrent), metadata.version("eventsourcing")


async def run(redis_url: str, events: int = 3000, writers: int = 32) -> dict[str, Any]:
    try:
        import eventsourcing.postgres  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"pyeventsourcing is not installed ({exc.name}): make bench installs it"}
    our_seq, our_conc = await ours(redis_url, events, writers)
    async with postgres_database() as dsn:
        peer_seq, peer_conc, version = await asyncio.to_thread(_peer, dsn, events, writers)
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
        "append_vs_peer": round(our_seq / peer_seq, 2) if peer_seq else None,
        "concurrent_append_vs_peer": round(our_conc / peer_conc, 2) if peer_conc else None,
        "limit": f"pyeventsourcing {version} on PostgreSQL {pg['server_version']}, same machine"
        " and run",
        "ratio": round(our_seq / peer_seq, 2) if peer_seq else None,
        "params": {
            "events": events,
            "writers": writers,
            "event": "a new aggregate's first event: a 2-line OrderBilled",
            "ours": "EventStore.append, expect version 0, one FCALL; private redis-server,"
            " appendonly yes, appendfsync always; concurrent: asyncio tasks, one pool",
            "peer": f"eventsourcing {version} Application.save of a new Order aggregate,"
            " PERSISTENCE_MODULE=eventsourcing.postgres (psycopg 3, pooled), a fresh database;"
            " concurrent: threads sharing the pool",
            "postgresql": pg,
            "cores": os.cpu_count(),
        },
    }
