"""Rebuild: events/s of ``streamshop rebuild`` per view, next to the raw speed of reading the
log and of bulk-writing the same store, all measured in the same run on the same servers.

A demo shop's log of about ``events`` events (accounts, catalog, orders; through the command
path) is filled once. Then, in this order:

* ``xrange``: every partition read with ``XRANGE … COUNT batch``, partitions concurrently
  (what a rebuild reads, bytes only), and the same again decoded (``decode_entry``: the
  envelope, the payload and any upcasting);
* ``<view>``: :func:`workers.rebuild.rebuild_view` with no live projector, from an empty new
  version to switched (setup, replay, catch-up check, pause, switch);
* ``<view>_raw``: the store's raw bulk write of equivalent data in the same batches with the
  same concurrency: MongoDB ``insert_many`` of one document per event, PostgreSQL ``COPY``
  of the very rows the view stores (see :mod:`bench.projection`).

Ratios: a view's rebuild rate ÷ its store's raw write rate (how close the rebuild is to what
the store can take) and ÷ the raw read rate (how much of the log's read speed it keeps).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from bench.common import Timer, rate
from bench.projection import demo_log, raw_writes, read_log
from events.codec import decode_entry
from events.store import EventStore
from workers.rebuild import Progress, RebuildOptions, rebuild_view

VIEWS = ("read_models", "audit", "warehouse")


async def read_speed(store: EventStore, batch: int, decode: bool) -> tuple[int, float]:
    """Read every partition to its end, concurrently; (entries, seconds)."""
    counts: dict[int, int] = {}

    async def partition(p: int) -> None:
        after, n = "0-0", 0
        while rows := await store.read_raw(p, after, batch):
            if decode:
                for entry_id, fields in rows:
                    decode_entry(entry_id, fields, p)
            n += len(rows)
            after = rows[-1][0]
            if len(rows) < batch:
                break
        counts[p] = n

    with Timer() as timer:
        await asyncio.gather(*(partition(p) for p in range(store.keys.partitions)))
    return sum(counts.values()), timer.seconds


async def run(redis_url: str, events: int = 100_000, batch: int = 2000) -> dict[str, Any]:
    accounts = max(events // 50, 10)
    products = max(events // 100, 10)
    orders = max(events - accounts - products, 1)
    results: dict[str, Any] = {}
    async with demo_log(redis_url, accounts, products, orders, seed=91) as demo:
        stack, store = demo.stack, demo.store
        logged = await store.count()
        n, seconds = await read_speed(store, batch, decode=False)
        xrange_rate = rate(n, seconds)
        n, seconds = await read_speed(store, batch, decode=True)
        results["xrange_events_per_s"] = xrange_rate
        results["xrange_decode_events_per_s"] = rate(n, seconds)
        reports = {
            view: await rebuild_view(
                stack.settings(), view, RebuildOptions(batch=batch), Progress(view, enabled=False)
            )
            for view in VIEWS
        }
        raw = await raw_writes(demo, await read_log(store, batch))
        for view in VIEWS:
            rebuilt = reports[view].events_per_s
            raw_rate = rate(logged, raw[view])
            results[f"{view}_events_per_s"] = rebuilt
            results[f"{view}_raw_write_events_per_s"] = raw_rate
            results[f"{view}_ratio"] = round(rebuilt / raw_rate, 3) if raw_rate else None
            results[f"{view}_read_ratio"] = round(rebuilt / xrange_rate, 4) if xrange_rate else None
    ratios = [results[f"{v}_ratio"] for v in VIEWS if results.get(f"{v}_ratio") is not None]
    return {
        **results,
        "limit": "raw read of the log (XRANGE, same batches) and raw bulk write of equivalent"
        " data to the same store (MongoDB insert_many, PostgreSQL COPY), same run",
        "ratio": min(ratios) if ratios else None,
        "params": {
            "events": logged,
            "log": demo.description,
            "fill_seconds": demo.fill_seconds,
            "batch": batch,
            "partitions": stack.partitions,
            "rebuild": "rebuild_view from empty to switched, no live projector, partitions"
            " concurrently",
            "figures": "<view>_events_per_s: rebuild; <view>_raw_write_events_per_s: the store's"
            " raw bulk write; <view>_ratio: rebuild ÷ raw write; <view>_read_ratio: rebuild ÷"
            " XRANGE; ratio: the worst view's rebuild ÷ raw write",
            "mongodb": "SecantusDB (secantusd-py) on a temporary on-disk store",
            "postgresql": "the machine's server, a fresh database",
            "cores": os.cpu_count(),
        },
    }
