"""Rebuilding views from the log while the shop keeps running, then proving them equal."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import asyncpg
import pytest

from app.settings import Settings
from events.store import EventStore
from projections.base import SinkUnavailable
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    append_v1_order,
    caught_up,
    eventually,
    live_projector,
    mongo_docs,
    settings_fixture,
    view_size,
)
from tests.support.cluster import single_and_cluster
from workers.dlq import metrics_key
from workers.rebuild import RebuildOptions, rebuild_view, rebuild_views
from workers.registry import factory_for
from workers.verify import verify_view
from workers.views import (
    BASE,
    VIEWS,
    ViewPointers,
    drop_version,
    mongo_collections,
    open_view,
    pg_schema,
    versioned,
)

pytestmark = single_and_cluster


async def test_rebuild_under_load_switches_every_view_and_verify_passes(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed()
    await shop.run(150)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    before = await pointers.currents()
    sizes: dict[str, list[int]] = {name: [] for name in VIEWS}
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            for name in VIEWS:
                sizes[name].append(await view_size(settings, pointers, name))
            await asyncio.sleep(0.01)

    async with live_projector(settings) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live views")
        load = asyncio.create_task(shop.run_until(stop, pause=0.01))
        reading = asyncio.create_task(reader())
        reports = await rebuild_views(settings, VIEWS, RebuildOptions(batch=100), quiet=True)
        await shop.run(30)
        stop.set()
        await asyncio.gather(load, reading)
        await eventually(lambda: caught_up(store, runner), what="the live views after the load")
        results = [await verify_view(settings, name, batch=100) for name in VIEWS]

    after = await pointers.currents()
    for report in reports:
        assert after[report.view] == report.version != before[report.view]
        assert report.previous == (before[report.view] or "base")
    for result in results:
        assert result.ok, (result.view, result.differences)
        assert result.counts and all(a == b for a, b in result.counts.values())
    for name, seen in sizes.items():
        assert len(seen) > 3, name
        assert all(b >= a for a, b in itertools.pairwise(seen)), (name, seen)
        assert seen[0] > 0, name


async def test_a_rebuilt_audit_log_has_the_same_hash_chain(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=5, products=5)
    await shop.run(150)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    async with live_projector(settings) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live views")
        live = await pointers.current("audit")
        report = await rebuild_view(settings, "audit", RebuildOptions(batch=50))
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        chains = [
            await conn.fetch(
                f'SELECT partition, n, entry_id, prev_hash, hash FROM "{pg_schema("audit", v)}"'
                ".events ORDER BY partition, n"
            )
            for v in (live, report.version)
        ]
    finally:
        await conn.close()
    assert len(chains[0]) == await store.count() > 0
    assert [tuple(r) for r in chains[1]] == [tuple(r) for r in chains[0]]


async def test_replay_upcasts_a_schema_1_order_like_the_live_path(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=2, products=2)
    order_id = await append_v1_order(store, shop.accounts[0], shop.products[0])
    async with live_projector(settings) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live views")
        live_orders = await mongo_docs(settings, "orders")
        report = await rebuild_view(settings, "read_models", RebuildOptions(batch=50))
        assert (await verify_view(settings, "read_models")).ok
        assert (await verify_view(settings, "warehouse")).ok
    rebuilt = await mongo_docs(settings, mongo_collections(report.version).orders)
    assert rebuilt == live_orders
    (order,) = [doc for doc in rebuilt if doc["_id"] == order_id]
    assert order["lines"][0]["unit_price"] == 700
    assert order["lines"][0]["line_total"] == 2100


async def test_deleting_a_read_model_collection_and_rebuilding_restores_it_exactly(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=5, products=5)
    await shop.run(80)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    async with live_projector(settings) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live views")
        assert await pointers.current("read_models") == BASE
        orders = await mongo_docs(settings, "orders")
        others = {c: await mongo_docs(settings, c) for c in ("accounts", "products")}
        assert orders
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient = AsyncMongoClient(settings.mongo.url)
        await client[settings.mongo.database].drop_collection("orders")
        await client.close()
        assert not (await verify_view(settings, "read_models")).ok
        report = await rebuild_view(settings, "read_models", RebuildOptions(batch=40))
        assert (await verify_view(settings, "read_models")).ok
    names = mongo_collections(report.version)
    assert await mongo_docs(settings, names.orders) == orders
    assert await mongo_docs(settings, names.accounts) == others["accounts"]
    assert await mongo_docs(settings, names.products) == others["products"]


async def test_a_lagging_consumer_group_is_handed_the_new_versions_position(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=3)
    async with live_projector(settings, ["audit"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live audit")
    await shop.run(60)  # the projector is down: its group falls behind
    report = await rebuild_view(settings, "audit", RebuildOptions(batch=50))
    heads = await store.heads()
    assert report.handed_over == sorted(p for p, head in heads.items() if head)
    for p, head in heads.items():
        (group,) = [
            g for g in await store.redis.xinfo_groups(store.keys.log(p)) if g["name"] == b"audit"
        ]
        assert group["last-delivered-id"].decode() == head
        assert group["lag"] == 0

    metrics = metrics_key(store.keys, "audit")
    applied = int(await store.redis.hget(metrics, "applied") or 0)
    logged = await store.count()
    async with live_projector(settings, ["audit"]) as runner:
        await shop.run(5)
        await eventually(lambda: caught_up(store, runner), what="the rebuilt audit to follow")
    # Only the entries appended after the rebuild were delivered again.
    assert int(await store.redis.hget(metrics, "applied") or 0) - applied == (
        await store.count() - logged
    )
    assert (await verify_view(settings, "audit")).ok


async def test_the_live_wrapper_backs_off_while_paused_and_follows_the_pointer(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=2, products=2)
    events = [e async for e in store.read_all()]
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    first, second = await pointers.current("audit"), f"t{uuid.uuid4().hex[:12]}"
    async with versioned("audit", factory_for("audit"), settings) as live:
        await live.setup()
        await store.redis.set(pointers.key("audit", ":pause"), "test", px=5000)
        with pytest.raises(SinkUnavailable):
            await live.apply(events[0].partition, [events[0]])
        await pointers.unpause("audit", "test")
        await live.apply(events[0].partition, [events[0]])
        assert await live.checkpoint(events[0].partition) == events[0].entry_id
        await pointers.set("audit", second)
        async with open_view(factory_for("audit"), settings, second) as target:
            await target.setup()
            assert await live.checkpoint(events[0].partition) is None
            await live.apply(events[1].partition, [events[1]])
            assert await target.checkpoint(events[1].partition) == events[1].entry_id
    await pointers.set("audit", first)
    await drop_version(settings, "audit", second)
