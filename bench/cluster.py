"""One node beside a three-primary Redis Cluster, in the same run (issue #19): appends/s and
bill-now orders/s (two products in other partitions: the saga on the cluster, the single
append on one node). Every node shares the machine's cores with the load, so on a small
machine this measures the cluster's overhead (routing, one call per slot, the saga's
extra steps), not a speed-up."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from typing import Any

from app.commands import execute
from app.commands.billing import BillLine, BillOrder
from bench.common import Timer, rate
from events.connection import connect
from events.ids import uuid7
from events.keys import Keys
from events.states import initial
from events.store import Append, EventStore, Metadata
from events.types import AccountCreated, ProductCreated
from tests.support.cluster import start_cluster

META = Metadata(actor="bench")


async def _appends(store: EventStore, count: int, concurrency: int) -> float:
    events = [
        AccountCreated(account_id=uuid7(), email="sealed", name="sealed", password_hash="h")
        for _ in range(count)
    ]
    queue = iter(events)

    async def worker() -> None:
        for event in queue:
            aggregate = event.aggregate()
            await store.append(
                Append(events=[event], expect={aggregate: 0}, seen={aggregate: initial(aggregate)})
            )

    with Timer() as timer:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rate(count, timer.seconds)


async def _setup_catalog(store: EventStore, products: int) -> tuple[str, list[str]]:
    account = AccountCreated(account_id=uuid7(), email="sealed", name="sealed", password_hash="h")
    created = [account]
    ids = []
    for _ in range(products):
        product = ProductCreated(
            product_id=uuid7(), sku=uuid.uuid4().hex, name="mug", price=100, stock=1_000_000
        )
        created.append(product)
        ids.append(product.product_id)
    for event in created:
        aggregate = event.aggregate()
        await store.append(
            Append(events=[event], expect={aggregate: 0}, seen={aggregate: initial(aggregate)})
        )
    return account.account_id, ids


async def _orders(store: EventStore, count: int, concurrency: int) -> float:
    account_id, products = await _setup_catalog(store, 8)
    by_partition: dict[int, str] = {}
    for product_id in products:
        by_partition.setdefault(store.keys.partition_of(f"product:{product_id}"), product_id)
    pair = list(by_partition.values())[:2]
    lines = [BillLine(product_id=p, quantity=1) for p in pair]
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await execute(store, BillOrder(account_id=account_id, lines=lines), META)

    with Timer() as timer:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rate(count, timer.seconds)


async def _measure(
    url: str, cluster: bool, events: int, orders: int, concurrency: int
) -> dict[str, float]:
    client = connect(url, cluster=cluster)
    prefix = f"ssbench:{uuid.uuid4().hex[:8]}"
    store = EventStore(client, Keys(prefix=prefix, partitions=8))
    try:
        await store.load_functions()
        return {
            "appends_per_s": await _appends(store, events, concurrency),
            "orders_per_s": await _orders(store, orders, concurrency),
        }
    finally:
        doomed = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for key in doomed:  # one by one: a multi-key DEL must not span slots
            await client.delete(key)
        await client.aclose()


async def run(
    redis_url: str, events: int = 3000, orders: int = 1000, concurrency: int = 16
) -> dict[str, Any]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return {"skipped": "redis-server and redis-cli are needed to start a cluster"}
    one = await _measure(redis_url, False, events, orders, concurrency)
    nodes = await asyncio.to_thread(start_cluster)
    try:
        for port in nodes.ports:  # as durable as the single node: fsync before every reply
            admin = connect(f"redis://127.0.0.1:{port}/0", cluster=False)
            await admin.config_set("appendfsync", "always")
            await admin.aclose()
        three = await _measure(nodes.url, True, events, orders, concurrency)
    finally:
        await asyncio.to_thread(nodes.stop)
        shutil.rmtree(nodes.root, ignore_errors=True)
    return {
        "one_node_appends_per_s": one["appends_per_s"],
        "cluster_appends_per_s": three["appends_per_s"],
        "one_node_orders_per_s": one["orders_per_s"],
        "cluster_orders_per_s": three["orders_per_s"],
        "limit": "the same load on one node (single atomic append per order)",
        "ratio": round(three["appends_per_s"] / one["appends_per_s"], 3)
        if one["appends_per_s"]
        else None,
        "ratio_orders": round(three["orders_per_s"] / one["orders_per_s"], 3)
        if one["orders_per_s"]
        else None,
        "params": {
            "events": events,
            "orders": orders,
            "concurrency": concurrency,
            "partitions": 8,
            "cluster": "3 primaries, no replicas, appendfsync always, on the same cores",
            "order": "2 lines, products in 2 partitions: on the cluster the billing saga "
            "(start, 2 reserves, confirm, 2 takes)",
        },
    }
