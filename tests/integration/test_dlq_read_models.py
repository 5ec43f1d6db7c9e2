"""Sequenced dead letters in the read models: effects MongoDB rejected for a while land
exactly once with ``dlq retry``, though the checkpoint and the stock watermarks moved past
them and part of each failed order (its order document, its other product) had landed."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.settings import Settings
from events.store import EventStore
from projections.read_models.projection import Collections, ReadModelsProjection
from tests.integration.test_rebuild_support import Shop, settings_fixture  # noqa: F401
from tests.support.dlq import Sink, bill, parked_sequences_are_redriven_and_land


async def test_rejected_product_writes_land_once_after_retry_and_verify_passes(
    settings: Settings, store: EventStore
) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    db = client[settings.mongo.database]

    async def reject(product_id: str) -> None:
        # A real rejection by the server (DocumentValidationFailure, code 121): every
        # write to this product's document, its own events and the stock orders take.
        await db.command("collMod", "products", validator={"_id": {"$ne": product_id}})

    async def accept() -> None:
        await db.command("collMod", "products", validator={})

    async def landed(orders: list[str]) -> set[str]:
        docs = await db["orders"].find({"_id": {"$in": orders}}, {"_id": 1}).to_list(None)
        return {doc["_id"] for doc in docs}

    try:
        await parked_sequences_are_redriven_and_land(
            settings, store, "read_models", Sink(reject, accept, landed, atomic=False)
        )
    finally:
        await client.close()


async def test_a_redrive_lands_once_and_is_a_no_op_where_the_event_was_folded(
    store: EventStore, mongo_db: AsyncDatabase
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=1, products=2)
    order_id = await bill(store, shop.accounts[0], shop.products)
    events = [rec for p in range(store.keys.partitions) for rec in await store.read_partition(p)]
    [order] = [rec for rec in events if rec.aggregate == f"order:{order_id}"]

    async def state(projection: ReadModelsProjection) -> list[Any]:
        products = projection.db[projection.collections.products]
        accounts = projection.db[projection.collections.accounts]
        stock = [(await products.find_one({"_id": p}))["stock"] for p in shop.products]
        account = await accounts.find_one({"_id": shop.accounts[0]})
        return [*stock, account["orders_count"], account["total_spent"]]

    async def fold(projection: ReadModelsProjection, skip: str | None = None) -> None:
        for rec in events:
            if rec.id != skip:
                await projection.apply(rec.partition, [rec])

    folded = ReadModelsProjection(mongo_db, Collections.suffixed("_folded"), store.personal)
    await fold(folded)
    expected = await state(folded)
    await folded.redrive(order.partition, [order])  # a rebuild folded it already
    assert await state(folded) == expected

    parked = ReadModelsProjection(mongo_db, Collections.suffixed("_parked"), store.personal)
    await fold(parked, skip=order.id)
    assert await state(parked) != expected
    await parked.redrive(order.partition, [order])
    assert await state(parked) == expected
    await parked.redrive(order.partition, [order])  # re-driven again (no XDEL reached)
    assert await state(parked) == expected
    products = await parked.db[parked.collections.products].find({}).to_list(None)
    assert not [k for doc in products for k in doc if k.startswith("redriven:")]
