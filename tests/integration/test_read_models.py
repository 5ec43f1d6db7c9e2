"""The read-models projection against a real MongoDB-protocol server, fed real log entries."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from events.codec import RecordedEvent
from events.store import Append, EventStore
from events.types import (
    AccountCreated,
    LoginFailed,
    LoginSucceeded,
    OrderBilled,
    OrderLine,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    StockAdjusted,
)
from projections.read_models import ReadModelsProjection
from tests.support.cluster import single_and_cluster

pytestmark = single_and_cluster


@pytest.fixture
def db(mongo_db: AsyncDatabase) -> AsyncDatabase:
    return mongo_db


@pytest.fixture
async def projection(db: AsyncDatabase) -> ReadModelsProjection:
    projection = ReadModelsProjection(db)
    await projection.setup()
    return projection


def new_id() -> str:
    return str(uuid.uuid4())


async def log_of(store: EventStore) -> list[RecordedEvent]:
    return [event async for event in store.read_all()]


def by_partition(events: Sequence[RecordedEvent]) -> dict[int, list[RecordedEvent]]:
    grouped: dict[int, list[RecordedEvent]] = defaultdict(list)
    for event in events:
        grouped[event.partition].append(event)
    return grouped


async def apply_all(projection: ReadModelsProjection, events: Sequence[RecordedEvent]) -> None:
    for partition, batch in by_partition(events).items():
        await projection.apply(partition, batch)


async def snapshot(db: AsyncDatabase) -> dict[str, list[dict[str, Any]]]:
    return {
        name: await db[name].find({}).sort("_id", 1).to_list(None)
        for name in ("accounts", "products", "orders")
    }


async def shop(store: EventStore) -> dict[str, str]:
    """An account that logs in and buys 2 + 1 of two products after a price change.

    The order lives in a partition of its own, so a test may apply it before the others
    without breaking the runtime's promise that one partition arrives in log order.
    """
    logins = {store.keys.partition_of(f"login:{d}") for d in ("d1", "d2")}
    free = next(p for p in range(store.keys.partitions) if p not in logins)

    def id_in(kind: str, inside: bool) -> str:
        return next(
            candidate
            for candidate in iter(new_id, None)
            if (store.keys.partition_of(f"{kind}:{candidate}") == free) == inside
        )

    ids = {
        "account": id_in("account", False),
        "p1": id_in("product", False),
        "p2": id_in("product", False),
        "order": id_in("order", True),
    }
    await store.append(
        Append(
            events=[
                AccountCreated(
                    account_id=ids["account"],
                    email="ana@example.com",
                    name="Ana",
                    password_hash="$argon2id$secret",
                )
            ]
        )
    )
    await store.append(
        Append(events=[LoginSucceeded(account_id=ids["account"], email_digest="d1")])
    )
    await store.append(Append(events=[LoginFailed(email_digest="d2", reason="unknown_email")]))
    for created in (  # one append each: on the cluster the two live in different slots
        ProductCreated(product_id=ids["p1"], sku="A1", name="Açaí", price=1000, stock=10),
        ProductCreated(product_id=ids["p2"], sku="B1", name="Bolo", price=500, stock=3),
    ):
        await store.append(Append(events=[created]))
    await store.append(Append(events=[ProductUpdated(product_id=ids["p1"], price=1200)]))
    await store.append(Append(events=[StockAdjusted(product_id=ids["p2"], delta=2)]))
    await store.append(
        Append(
            events=[
                OrderBilled(
                    order_id=ids["order"],
                    account_id=ids["account"],
                    lines=[
                        OrderLine(
                            product_id=ids["p1"],
                            name="Açaí",
                            quantity=2,
                            unit_price=1200,
                            line_total=2400,
                        ),
                        OrderLine(
                            product_id=ids["p2"],
                            name="Bolo",
                            quantity=1,
                            unit_price=500,
                            line_total=500,
                        ),
                    ],
                    total=2900,
                )
            ]
        )
    )
    return ids


async def test_each_collection_shows_the_events(
    store: EventStore, projection: ReadModelsProjection, db: AsyncDatabase
) -> None:
    ids = await shop(store)
    await apply_all(projection, await log_of(store))

    account = await db["accounts"].find_one({"_id": ids["account"]})
    assert account is not None
    assert (account["email"], account["name"], account["role"]) == (
        "ana@example.com",
        "Ana",
        "customer",
    )
    assert (account["orders_count"], account["total_spent"], account["version"]) == (1, 2900, 1)
    assert account["last_login_at"] is not None
    assert "password_hash" not in str(account) and "secret" not in str(account)

    p1 = await db["products"].find_one({"_id": ids["p1"]})
    p2 = await db["products"].find_one({"_id": ids["p2"]})
    assert (p1["price"], p1["stock"], p1["version"], p1["name_key"]) == (1200, 8, 2, "açaí")
    assert (p2["stock"], p2["version"]) == (4, 2)

    order = await db["orders"].find_one({"_id": ids["order"]})
    assert order["account_id"] == ids["account"]
    assert order["total"] == 2900
    assert [line["quantity"] for line in order["lines"]] == [2, 1]


async def test_replaying_every_batch_changes_nothing(
    store: EventStore, projection: ReadModelsProjection, db: AsyncDatabase
) -> None:
    await shop(store)
    events = await log_of(store)
    await apply_all(projection, events)
    first = await snapshot(db)
    await apply_all(projection, events)
    for partition, batch in by_partition(events).items():
        for event in batch:
            await projection.apply(partition, [event])
    assert await snapshot(db) == first


async def test_an_older_event_changes_nothing(
    store: EventStore, projection: ReadModelsProjection, db: AsyncDatabase
) -> None:
    product_id = new_id()
    await store.append(
        Append(events=[ProductCreated(product_id=product_id, sku="S", name="Old", price=100)])
    )
    await store.append(Append(events=[ProductUpdated(product_id=product_id, name="Middle")]))
    await store.append(Append(events=[ProductUpdated(product_id=product_id, name="New")]))
    created, middle, new = await log_of(store)
    await projection.apply(created.partition, [created, new])
    await projection.apply(middle.partition, [middle])
    doc = await db["products"].find_one({"_id": product_id})
    assert (doc["name"], doc["version"]) == ("New", 3)


async def test_an_order_applied_before_its_account_and_products_counts_once(
    store: EventStore, projection: ReadModelsProjection, db: AsyncDatabase
) -> None:
    ids = await shop(store)
    events = await log_of(store)
    orders = [e for e in events if e.type == "OrderBilled"]
    others = [e for e in events if e.type != "OrderBilled"]
    await apply_all(projection, orders)
    await apply_all(projection, others)
    await apply_all(projection, orders)
    account = await db["accounts"].find_one({"_id": ids["account"]})
    assert (account["orders_count"], account["total_spent"], account["email"]) == (
        1,
        2900,
        "ana@example.com",
    )
    p1 = await db["products"].find_one({"_id": ids["p1"]})
    assert (p1["stock"], p1["price"], p1["deleted"]) == (8, 1200, False)


async def test_deleted_product_is_flagged(
    store: EventStore, projection: ReadModelsProjection, db: AsyncDatabase
) -> None:
    product_id = new_id()
    await store.append(
        Append(events=[ProductCreated(product_id=product_id, sku="S", name="X", price=1)])
    )
    await store.append(Append(events=[ProductDeleted(product_id=product_id)]))
    await apply_all(projection, await log_of(store))
    doc = await db["products"].find_one({"_id": product_id})
    assert (doc["deleted"], doc["version"]) == (True, 2)


async def test_checkpoint_is_the_last_entry_and_never_goes_back(
    store: EventStore, projection: ReadModelsProjection
) -> None:
    await shop(store)
    events = await log_of(store)
    grouped = by_partition(events)
    partition, batch = next(iter(grouped.items()))
    assert await projection.checkpoint(partition) is None
    await projection.apply(partition, batch)
    assert await projection.checkpoint(partition) == batch[-1].entry_id
    await projection.apply(partition, batch[:1])
    assert await projection.checkpoint(partition) == batch[-1].entry_id
    assert (await projection.checkpoints())[partition] == batch[-1].entry_id
