"""Folded writes give the same documents as one write per event, however the log is cut.

The reference view applies the log one event at a time (every write guarded on its own).
The folded view gets the same log in other batch cuts, replays of partly applied batches
and other partition orders; its documents, guards included, must be the same.
"""

from __future__ import annotations

import asyncio
import random
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
    LoginSucceeded,
    OrderBilled,
    OrderLine,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    StockAdjusted,
)
from projections.read_models import Collections, ReadModelsProjection


@pytest.fixture
def db(mongo_db: AsyncDatabase) -> AsyncDatabase:
    return mongo_db


def new_id() -> str:
    return str(uuid.uuid4())


def line(product_id: str, quantity: int, price: int) -> OrderLine:
    return OrderLine(
        product_id=product_id,
        name="Pão de queijo",
        quantity=quantity,
        unit_price=price,
        line_total=quantity * price,
    )


async def busy_shop(store: EventStore) -> list[RecordedEvent]:
    """Two accounts and two products that every order touches, so one partition's batch
    holds several writes to the same documents: own (the product's own events) and cross
    (orders from that partition), mixed with logins."""
    accounts = [new_id(), new_id()]
    products = [new_id(), new_id()]
    for n, account in enumerate(accounts):
        await store.append(
            Append(
                events=[
                    AccountCreated(
                        account_id=account,
                        email=f"c{n}@example.com",
                        name=f"C{n}",
                        password_hash="x",
                    )
                ]
            )
        )
    for n, product in enumerate(products):
        await store.append(
            Append(
                events=[
                    ProductCreated(product_id=product, sku=f"S{n}", name="Pão", price=100, stock=50)
                ]
            )
        )
    for n in range(16):
        account, product = accounts[n % 2], products[n % 2]
        await store.append(
            Append(
                events=[
                    OrderBilled(
                        order_id=new_id(),
                        account_id=account,
                        lines=[line(product, 1 + n % 3, 100), line(products[0], 1, 100)],
                        total=(1 + n % 3) * 100 + 100,
                    )
                ]
            )
        )
        if n % 4 == 1:
            await store.append(Append(events=[StockAdjusted(product_id=product, delta=5)]))
            await store.append(
                Append(events=[LoginSucceeded(account_id=account, email_digest="d")])
            )
        if n % 5 == 2:
            await store.append(Append(events=[ProductUpdated(product_id=product, price=100 + n)]))
    await store.append(Append(events=[ProductDeleted(product_id=products[1])]))
    return [event async for event in store.read_all()]


def by_partition(events: Sequence[RecordedEvent]) -> dict[int, list[RecordedEvent]]:
    grouped: dict[int, list[RecordedEvent]] = defaultdict(list)
    for event in events:
        grouped[event.partition].append(event)
    return grouped


def cuts(batch: list[RecordedEvent], rng: random.Random) -> list[list[RecordedEvent]]:
    """``batch`` cut at random places into consecutive pieces."""
    pieces, start = [], 0
    while start < len(batch):
        end = start + rng.randint(1, 6)
        pieces.append(batch[start:end])
        start = end
    return pieces


async def view(db: AsyncDatabase, name: str) -> ReadModelsProjection:
    projection = ReadModelsProjection(db, Collections.suffixed(f"_{name}"))
    await projection.setup()
    return projection


async def documents(projection: ReadModelsProjection) -> dict[str, list[dict[str, Any]]]:
    return {
        role: await projection.db[getattr(projection.collections, role)]
        .find({})
        .sort("_id", 1)
        .to_list(None)
        for role in ("accounts", "products", "orders")
    }


async def forget_checkpoints(projection: ReadModelsProjection) -> None:
    """So the next apply really replays (the checkpoint would skip it cheaply)."""
    await projection.db[projection.collections.checkpoints].delete_many({})


async def reference(db: AsyncDatabase, events: Sequence[RecordedEvent]) -> dict[str, Any]:
    one_by_one = await view(db, "reference")
    for partition, batch in by_partition(events).items():
        for event in batch:
            await one_by_one.apply(partition, [event])
    return await documents(one_by_one)


async def test_whole_batches_equal_one_event_at_a_time(
    store: EventStore, db: AsyncDatabase
) -> None:
    events = await busy_shop(store)
    folded = await view(db, "folded")
    for partition, batch in by_partition(events).items():
        await folded.apply(partition, batch)
    assert await documents(folded) == await reference(db, events)


async def test_replays_cut_differently_change_nothing(store: EventStore, db: AsyncDatabase) -> None:
    events = await busy_shop(store)
    expected = await reference(db, events)
    folded = await view(db, "replayed")
    rng = random.Random(7)
    partitions = by_partition(events)
    for round_ in range(3):
        order = list(partitions)
        rng.shuffle(order)
        for partition in order:
            for piece in cuts(partitions[partition], rng) if round_ else [partitions[partition]]:
                await folded.apply(partition, piece)
        assert await documents(folded) == expected
        await forget_checkpoints(folded)


async def test_a_batch_over_partly_applied_documents_applies_only_the_rest(
    store: EventStore, db: AsyncDatabase
) -> None:
    events = await busy_shop(store)
    expected = await reference(db, events)
    partitions = by_partition(events)
    for keep in (1, 3, 5):
        folded = await view(db, f"partly_{keep}")
        for partition, batch in partitions.items():  # a first delivery cut after `keep`...
            await folded.apply(partition, batch[:keep])
        await forget_checkpoints(folded)  # ...whose checkpoint was lost
        for partition, batch in reversed(partitions.items()):
            await folded.apply(partition, batch)
        assert await documents(folded) == expected


async def test_partitions_in_any_order_and_concurrently_give_the_same_documents(
    store: EventStore, db: AsyncDatabase
) -> None:
    events = await busy_shop(store)
    expected = await reference(db, events)
    partitions = by_partition(events)
    folded = await view(db, "concurrent")

    async def feed(partition: int, rng: random.Random) -> None:
        for piece in cuts(partitions[partition], rng):
            await folded.apply(partition, piece)

    await asyncio.gather(*(feed(p, random.Random(p)) for p in partitions))
    assert await documents(folded) == expected


async def test_a_replay_over_a_partly_applied_update_finishes_it(
    store: EventStore, db: AsyncDatabase
) -> None:
    """A product's own events after its creation fold into one plain update; when an earlier
    delivery applied the first of them, that update matches nothing and the rest must still
    be applied one by one."""
    events = await busy_shop(store)
    expected = await reference(db, events)
    folded = await view(db, "plain")
    busiest = max(
        {e.aggregate for e in events if e.aggregate.startswith("product:")},
        key=lambda a: sum(e.aggregate == a for e in events),
    )
    for partition, batch in by_partition(events).items():
        own = [n for n, e in enumerate(batch) if e.aggregate == busiest]
        if not own:
            await folded.apply(partition, batch)
            continue
        first, second = own[0] + 1, own[1] + 1
        await folded.apply(partition, batch[:first])
        await folded.apply(partition, batch[first:second])
        await forget_checkpoints(folded)
        await folded.apply(partition, batch[first:])
    assert await documents(folded) == expected


async def test_a_bad_write_fails_only_its_own_partition_when_batches_are_written_together(
    store: EventStore, db: AsyncDatabase
) -> None:
    """Batches of several partitions are written as one (group commit); a write the store
    rejects must still fail only the batch it came from, so only that partition isolates it."""
    projection = await view(db, "isolated")
    broken = new_id()
    await projection.db[projection.collections.products].insert_one(
        {"_id": broken, "stock": "a string cannot be decremented", "version": 1}
    )
    sale = await store.append(
        Append(
            events=[
                OrderBilled(
                    order_id=new_id(), account_id=new_id(), lines=[line(broken, 1, 100)], total=100
                )
            ]
        )
    )
    (bad_partition,) = sale.positions
    while True:
        account = new_id()
        await store.append(
            Append(
                events=[
                    AccountCreated(
                        account_id=account, email="e@example.com", name="E", password_hash="x"
                    )
                ]
            )
        )
        events = [e async for e in store.read_all()]
        good = [e for e in events if e.partition != bad_partition]
        if good:
            break
    bad = [e for e in events if e.partition == bad_partition and e.type == "OrderBilled"]
    async with projection._writing:  # hold the writer so both batches queue for one write
        applies = asyncio.gather(
            projection.apply(bad_partition, bad),
            projection.apply(good[0].partition, good),
            return_exceptions=True,
        )
        for _ in range(500):
            if len(projection._queue) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(projection._queue) == 2
    outcomes = await applies
    assert isinstance(outcomes[0], Exception)
    assert outcomes[1] is None
    assert await projection.checkpoint(good[0].partition) == good[-1].entry_id
    assert await projection.checkpoint(bad_partition) is None
    doc = await projection.db[projection.collections.accounts].find_one({"_id": account})
    assert doc is not None and doc["email"] == "e@example.com"
