"""Append throughput on a three-primary Redis Cluster beside one node, in the same run (#19).

Both go through ``events.connection.connect`` and ``EventStore.append``, one event per
append on fresh aggregates (each append's keys share one slot), ``concurrency`` appends in
flight. The cluster nodes are switched to ``appendfsync always`` like the single node, so
both pay the same fsync. On a 2-core machine the three primaries, the client and the
single node share the cores: the ratio shows the cluster client's overhead, not a speed-up.

``POST /orders`` is not measured: an order's keys (order, account, each product) span
slots, which the store refuses (``SlotsDiffer``) until the saga of issue #19 exists.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from typing import Any

import redis

from bench.append import sample_order
from bench.common import Timer, rate
from events.connection import connect
from events.keys import Keys
from events.store import Append, EventStore
from tests.support.cluster import start_cluster


async def _appends_per_s(client: Any, events: int, concurrency: int) -> float:
    store = EventStore(client, Keys(prefix=f"ssbench:{uuid.uuid4().hex[:8]}", partitions=8))
    await store.load_functions()
    orders = [sample_order() for _ in range(events)]
    queue = iter(orders)

    async def worker() -> None:
        for order in queue:
            await store.append(Append(events=[order], expect={order.aggregate(): 0}))

    with Timer() as timer:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rate(events, timer.seconds)


async def run(redis_url: str, events: int = 5000, concurrency: int = 16) -> dict[str, object]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return {"skipped": "redis-server and redis-cli are needed to start a cluster"}
    single = connect(redis_url, cluster=False)
    try:
        one = await _appends_per_s(single, events, concurrency)
    finally:
        await single.aclose()
    nodes = await asyncio.to_thread(start_cluster, 3)
    try:
        for port in nodes.ports:
            with redis.Redis(port=port) as node:
                node.config_set("appendfsync", "always")
        cluster = connect(nodes.url, cluster=True)
        try:
            three = await _appends_per_s(cluster, events, concurrency)
        finally:
            await cluster.aclose()
    finally:
        nodes.stop()
        shutil.rmtree(nodes.root, ignore_errors=True)
    return {
        "append_per_s_1node": one,
        "append_per_s_3primaries": three,
        "append_3primaries_vs_1node": round(three / one, 3) if one else None,
        "limit": "the same appends on one durable node, same run, same client code",
        "note": "2 cores shared by 3 primaries + client: overhead, not speed-up",
        "params": {
            "events": events,
            "concurrency": concurrency,
            "redis": "appendonly yes, appendfsync always on every node; cluster without replicas",
            "orders_over_http": "not measured: POST /orders spans slots until the saga exists",
        },
    }
