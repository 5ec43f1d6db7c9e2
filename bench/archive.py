"""The archive: its write rate, Redis memory of the log before and after archiving N orders,
the log's read rate from Redis only next to archive plus Redis (the read every rebuild,
verify and export does), and one view's rebuild rate (audit, PostgreSQL) from Redis only next
to the same rebuild from archive plus Redis."""

from __future__ import annotations

import tempfile
import uuid

import redis.asyncio as aioredis

from app.settings import RedisSettings, Settings
from bench.append import sample_order
from bench.common import Timer, rate
from bench.projection import demo_log
from events.archive import read_manifest
from events.connection import connect
from events.files import FileRoot
from events.keys import Keys
from events.store import Append, EventStore
from workers.archive import ArchiveOptions, archive
from workers.rebuild import Progress, RebuildOptions, rebuild_view

REBUILD_VIEW = "audit"
"""The view rebuilt before and after archiving: PostgreSQL, the store whose rebuild is fastest,
so the archive's read cost shows most."""


async def _log_bytes(client: aioredis.Redis, keys: Keys) -> int:
    total = 0
    for key in keys.logs():
        total += int(await client.memory_usage(key, samples=0) or 0)
    return total


async def _read_all(store: EventStore, batch: int = 1000) -> int:
    n = 0
    for p in range(store.keys.partitions):
        after = "0-0"
        while rows := await store.read_raw(p, after, batch):
            n += len(rows)
            after = rows[-1][0]
    return n


async def _rebuild_rates(
    redis_url: str, events: int, keep: int, batch: int = 2000
) -> dict[str, object]:
    """A demo shop's log with its servers (as :mod:`bench.rebuild`); the view rebuilt from
    Redis only, then the log archived down to ``keep`` per partition, then rebuilt again."""
    accounts, products = max(events // 50, 10), max(events // 100, 10)
    orders = max(events - accounts - products, 1)
    async with demo_log(redis_url, accounts, products, orders, seed=93) as demo:
        settings = demo.stack.settings()
        options = RebuildOptions(batch=batch)
        live = await rebuild_view(settings, REBUILD_VIEW, options, Progress("", enabled=False))
        with tempfile.TemporaryDirectory(prefix="ssbench-archive-") as tmp:
            report = await archive(settings, ArchiveOptions(to=tmp, keep=keep))
            mixed = await rebuild_view(settings, REBUILD_VIEW, options, Progress("", enabled=False))
        assert mixed.events == live.events, (mixed.events, live.events)
    return {
        "rebuild_live_events_per_s": live.events_per_s,
        "rebuild_archive_events_per_s": mixed.events_per_s,
        "rebuild_archive_vs_live": (
            round(mixed.events_per_s / live.events_per_s, 3) if live.events_per_s else None
        ),
        "rebuild_params": {
            "view": REBUILD_VIEW,
            "events": live.events,
            "log": demo.description,
            "archived_entries": report.entries,
            "keep_per_partition": keep,
            "batch": batch,
        },
    }


async def run(
    redis_url: str,
    orders: int = 50_000,
    keep: int = 1000,
    batch: int = 200,
    rebuild_events: int = 50_000,
) -> dict[str, object]:
    client = connect(redis_url)
    prefix = f"ssbench:{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix=prefix, partitions=8)
    settings = Settings(redis=RedisSettings(url=redis_url, prefix=prefix, partitions=8))
    store = EventStore(client, keys)
    await store.load_functions()
    try:
        for i in range(0, orders, batch):
            chunk = [sample_order() for _ in range(min(batch, orders - i))]
            await store.append(Append(events=chunk))
        before = await _log_bytes(client, keys)
        with Timer() as t:
            n = await _read_all(store)
        live_read = rate(n, t.seconds)
        with tempfile.TemporaryDirectory(prefix="ssbench-archive-") as tmp:
            report = await archive(settings, ArchiveOptions(to=tmp, keep=keep))
            after = await _log_bytes(client, keys)
            with Timer() as t:
                m = await _read_all(EventStore(client, keys))
            mixed_read = rate(m, t.seconds)
            segment_bytes = sum(
                s["bytes"]
                for part in read_manifest(FileRoot(tmp))["partitions"].values()
                for s in part["segments"]
            )
        assert m == n == orders, (m, n, orders)
    finally:
        cleanup = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(cleanup), 500):
            await client.delete(*cleanup[i : i + 500])
        await client.aclose()
    rebuild = await _rebuild_rates(redis_url, rebuild_events, keep)
    return {
        "archive_entries_per_s": report.entries_per_s,
        "archived_entries": report.entries,
        "redis_log_bytes_before": before,
        "redis_log_bytes_after": after,
        "redis_log_bytes_freed_per_archived_entry": round((before - after) / report.entries, 1),
        "archive_bytes_per_entry": round(segment_bytes / report.entries, 1),
        "read_live_events_per_s": live_read,
        "read_archive_plus_live_events_per_s": mixed_read,
        "limit": "read of the whole log from Redis only, same batches, same run",
        "ratio": round(mixed_read / live_read, 3) if live_read else None,
        **rebuild,
        "params": {
            "orders": orders,
            "event": "OrderBilled with 2 lines",
            "keep_per_partition": keep,
            "partitions": 8,
            "segment_rows": ArchiveOptions().segment_rows,
            "archive": "local directory (tempfile)",
        },
    }
