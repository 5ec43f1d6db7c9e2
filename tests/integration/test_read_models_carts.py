"""The cart read model (``carts``): follows set / remove / checkout, replays to the same
documents whatever the batch split or a rebuild, and ``verify`` names a tampered cart."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.settings import Settings
from events.codec import RecordedEvent
from events.store import Append, EventStore
from events.types import CartCheckedOut, CartItemRemoved, CartItemSet, Event
from projections.read_models import Collections, ReadModelsProjection
from tests.integration.test_rebuild_support import (  # noqa: F401
    caught_up,
    eventually,
    live_projector,
    mongo_docs,
    settings_fixture,
)
from tests.integration.test_verify import verify_cli
from workers.rebuild import RebuildOptions, rebuild_view
from workers.views import ViewPointers, mongo_collections


def new_id() -> str:
    return str(uuid.uuid4())


async def append_cart_story(store: EventStore, account_id: str) -> tuple[str, str, str]:
    """Three products in, one changed, one out, a checkout, then one product in again.

    One product id has a dot and a dollar sign, which a field name cannot take as is.
    """
    a, b, c = f"p.{new_id()}", f"$b-{new_id()}", new_id()
    events: list[Event] = [
        CartItemSet(account_id=account_id, product_id=a, quantity=2),
        CartItemSet(account_id=account_id, product_id=b, quantity=1),
        CartItemSet(account_id=account_id, product_id=a, quantity=5),
        CartItemRemoved(account_id=account_id, product_id=b),
        CartItemSet(account_id=account_id, product_id=c, quantity=3),
        CartCheckedOut(account_id=account_id, order_id="o-1"),
        CartItemSet(account_id=account_id, product_id=b, quantity=4),
    ]
    for event in events:
        await store.append(Append(events=[event]))
    return a, b, c


def items(doc: dict[str, Any] | None) -> list[tuple[str, int]]:
    assert doc is not None
    return [(i["product_id"], i["quantity"]) for i in doc.get("items", {}).values()]


async def cart_history(
    store: EventStore, projection: ReadModelsProjection, account_id: str
) -> list[list[tuple[str, int]]]:
    """The cart's items after each of its events, applied one at a time."""
    seen = []
    async for rec in store.read_all():
        await projection.apply(rec.partition, [rec])
        doc = await projection.db[projection.collections.carts].find_one({"_id": account_id})
        seen.append(items(doc))
    return seen


async def test_cart_document_follows_set_remove_and_checkout(
    mongo_db: AsyncDatabase, store: EventStore
) -> None:
    account = new_id()
    a, b, c = await append_cart_story(store, account)
    projection = ReadModelsProjection(mongo_db)
    await projection.setup()

    history = await cart_history(store, projection, account)

    assert history == [
        [(a, 2)],
        [(a, 2), (b, 1)],
        [(a, 5), (b, 1)],
        [(a, 5)],
        [(a, 5), (c, 3)],
        [],
        [(b, 4)],
    ]
    doc = await mongo_db["carts"].find_one({"_id": account})
    assert doc is not None
    assert doc["account_id"] == account
    assert doc["version"] == 7
    assert doc["last_order_id"] == "o-1"
    assert list(doc["items"].values()) == [{"product_id": b, "quantity": 4}]


async def test_a_replayed_or_differently_batched_cart_log_gives_the_same_document(
    mongo_db: AsyncDatabase, store: EventStore
) -> None:
    account = new_id()
    await append_cart_story(store, account)
    log: list[RecordedEvent] = [rec async for rec in store.read_all()]
    one_by_one = ReadModelsProjection(mongo_db, Collections.suffixed("_single"))
    batched = ReadModelsProjection(mongo_db, Collections.suffixed("_batched"))
    for rec in log:
        await one_by_one.apply(rec.partition, [rec])
    await batched.apply(log[0].partition, log)
    await one_by_one.db["checkpoints_single"].delete_many({})  # replay it all again
    await one_by_one.apply(log[0].partition, log)

    single = await mongo_db["carts_single"].find_one({"_id": account})
    folded = await mongo_db["carts_batched"].find_one({"_id": account})
    assert single is not None and single == folded
    assert single["version"] == len(log)


async def test_rebuilding_the_read_models_gives_the_same_cart_documents(
    settings: Settings, store: EventStore
) -> None:
    accounts = [new_id() for _ in range(3)]
    for account in accounts:
        await append_cart_story(store, account)
    async with live_projector(settings, ["read_models"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live read models")
        live = await mongo_docs(settings, "carts")
        report = await rebuild_view(settings, "read_models", RebuildOptions(batch=3))
    assert sorted(doc["_id"] for doc in live) == sorted(accounts)
    assert await mongo_docs(settings, mongo_collections(report.version).carts) == live


async def test_verify_names_a_tampered_cart(settings: Settings, store: EventStore) -> None:
    account = new_id()
    await append_cart_story(store, account)
    async with live_projector(settings, ["read_models"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live read models")
    version = await ViewPointers(store.redis, settings.redis.prefix).current("read_models")
    carts = mongo_collections(version).carts

    ok = await asyncio.to_thread(verify_cli, settings, "read_models")
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]

    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    try:
        await client[settings.mongo.database][carts].update_one(
            {"_id": account}, {"$set": {"items": {}}}
        )
    finally:
        await client.close()

    bad = await asyncio.to_thread(verify_cli, settings, "read_models")
    assert bad.returncode == 1, bad.stdout + bad.stderr[-2000:]
    assert "DIFFERS in 1 place(s)" in bad.stdout
    assert f'carts "{account}": differs (items: live=' in bad.stdout
    client = AsyncMongoClient(settings.mongo.url)
    try:
        names = await client[settings.mongo.database].list_collection_names()
    finally:
        await client.close()
    assert [n for n in names if n.startswith("carts")] == [carts]  # the scratch carts dropped
