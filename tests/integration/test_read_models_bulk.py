"""The rebuild's in-memory fold (:mod:`projections.read_models.bulk`) inserts the documents
the live path builds on the server, one guarded write at a time: same documents, same field
values, guards (``version``, ``applied.p<P>``) included, whatever the batch cuts, replays and
partition order; and after its flush the live path goes on from them."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from events.codec import RecordedEvent
from events.store import Append, EventStore
from events.types import (
    CartCheckedOut,
    CartItemRemoved,
    CartItemSet,
    CategoryCreated,
    CategoryRenamed,
)
from projections.read_models import ReadModelsProjection
from projections.read_models import bulk as bulk_module
from projections.read_models.bulk import BulkFold, Documents, Unsupported
from projections.read_models.folding import Own, Write
from projections.read_models.projection import Collections
from tests.integration.test_read_models_folding import busy_shop, by_partition, cuts, view

ROLES = ("accounts", "products", "orders", "carts", "categories", "checkpoints")


@pytest.fixture
def db(mongo_db: AsyncDatabase) -> AsyncDatabase:
    return mongo_db


async def rich_shop(store: EventStore) -> list[RecordedEvent]:
    """:func:`busy_shop` plus carts (set, re-set, remove, check out) and categories."""
    await busy_shop(store)
    accounts = [str(uuid.uuid4()) for _ in range(2)]
    products = [str(uuid.uuid4()) for _ in range(3)]
    for n in range(12):
        account, product = accounts[n % 2], products[n % 3]
        await store.append(
            Append(events=[CartItemSet(account_id=account, product_id=product, quantity=1 + n)])
        )
        if n % 4 == 3:
            await store.append(
                Append(events=[CartItemRemoved(account_id=account, product_id=product)])
            )
        if n == 7:
            await store.append(Append(events=[CartCheckedOut(account_id=account, order_id="o")]))
    await store.append(Append(events=[CategoryCreated(slug="tea", name="Tea")]))
    await store.append(Append(events=[CategoryRenamed(slug="tea", name="Teas")]))
    return [event async for event in store.read_all()]


async def documents(projection: ReadModelsProjection) -> dict[str, list[dict[str, Any]]]:
    return {
        role: await projection.db[getattr(projection.collections, role)]
        .find({})
        .sort("_id", 1)
        .to_list(None)
        for role in ROLES
    }


async def reference(db: AsyncDatabase, events: Sequence[RecordedEvent]) -> dict[str, Any]:
    one_by_one = await view(db, "reference")
    for partition, batch in by_partition(events).items():
        for event in batch:
            await one_by_one.apply(partition, [event])
    return await documents(one_by_one)


async def test_the_flushed_fold_equals_the_live_path_however_it_is_fed(
    store: EventStore, db: AsyncDatabase
) -> None:
    events = await rich_shop(store)
    expected = await reference(db, events)
    partitions = by_partition(events)
    for seed in range(3):
        target = await view(db, f"bulk_{seed}")
        bulk = BulkFold(target)
        rng = random.Random(seed)

        async def feed(partition: int, rng: random.Random, bulk: BulkFold = bulk) -> None:
            pieces = cuts(partitions[partition], rng)
            for piece in pieces + pieces[: rng.randint(0, len(pieces))]:  # and re-deliveries
                await bulk.apply(partition, piece)

        await asyncio.gather(*(feed(p, random.Random(rng.random())) for p in partitions))
        assert await documents(target) == {role: [] for role in ROLES}  # nothing written yet
        await bulk.flush()
        assert await documents(target) == expected
        await bulk.apply(events[-1].partition, [events[-1]])  # live path from here: a no-op
        assert await documents(target) == expected


async def test_after_the_flush_the_rest_of_the_log_takes_the_live_path(
    store: EventStore, db: AsyncDatabase
) -> None:
    events = await rich_shop(store)
    expected = await reference(db, events)
    target = await view(db, "split")
    bulk = BulkFold(target)
    partitions = by_partition(events)
    for partition, batch in partitions.items():
        await bulk.apply(partition, batch[: len(batch) // 2])
    await bulk.flush()
    assert not bulk.folding
    for partition, batch in partitions.items():
        await bulk.apply(partition, batch[len(batch) // 2 :])
    assert await documents(target) == expected


def test_a_batch_the_memory_cannot_apply_exactly_is_undone_whole() -> None:
    memory = Documents()
    memory.apply(
        0, [("1-0", [Write("products", "p", {"$set": {"stock": 3}}, Own(1), upsert=True)])]
    )
    before = {"_id": "p", "stock": 3, "version": 1}
    assert memory.docs["products"]["p"] == before
    batch = [
        ("2-0", [Write("products", "p", {"$set": {"name": "x"}}, Own(2))]),
        ("3-0", [Write("products", "q", {"$inc": {"stock": 1}}, Own(1), upsert=True)]),
        ("4-0", [Write("products", "p", {"$set": {"stock.a": 1}}, Own(3))]),  # into an int
    ]
    with pytest.raises(Unsupported):
        memory.apply(0, batch)
    assert memory.docs["products"] == {"p": before}
    assert memory.checkpoints == {0: "1-0"}


async def test_a_batch_folded_in_chunks_and_cut_by_the_memory_ends_as_the_live_path(
    store: EventStore, db: AsyncDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is folded a few events per step (the loop runs between steps); when the memory
    gives up in a later chunk, the chunks before it are flushed and the rest of the batch,
    and every later one, takes the live path."""
    events = await rich_shop(store)
    expected = await reference(db, events)
    monkeypatch.setattr(bulk_module, "FOLD_CHUNK", 3)
    calls = 0
    apply = Documents.apply

    def gives_up_on_the_fifth_chunk(self: Documents, partition: int, writes: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise Unsupported("a write the memory cannot do")
        apply(self, partition, writes)

    monkeypatch.setattr(Documents, "apply", gives_up_on_the_fifth_chunk)
    target = await view(db, "chunked")
    bulk = BulkFold(target)
    partitions = by_partition(events)
    longest = max(partitions, key=lambda p: len(partitions[p]))
    assert len(partitions[longest]) > 5 * 3  # the memory gives up inside this first batch
    await bulk.apply(longest, partitions[longest])
    assert not bulk.folding
    assert calls == 5
    for partition, batch in partitions.items():
        if partition != longest:
            await bulk.apply(partition, batch)
    assert await documents(target) == expected


async def indexes(projection: ReadModelsProjection) -> dict[str, dict[str, Any]]:
    found = {}
    for role in ("accounts", "products", "orders"):
        info = await projection.db[getattr(projection.collections, role)].index_information()
        found[role] = {name: spec["key"] for name, spec in info.items() if name != "_id_"}
    return found


async def test_the_query_indexes_are_built_by_the_flush_after_the_inserts(
    store: EventStore, db: AsyncDatabase
) -> None:
    """A rebuilt version is loaded unindexed (nobody queries it before the switch) and gets
    the live path's indexes when its documents are in, before any live-path write."""
    events = await rich_shop(store)
    live = await view(db, "indexed")
    target = ReadModelsProjection(db, Collections.suffixed("_loaded"))
    bulk = BulkFold(target)
    await bulk.setup()
    for partition, batch in by_partition(events).items():
        await bulk.apply(partition, batch)
    assert not any((await indexes(target)).values())
    await bulk.flush()
    expected = await indexes(live)
    assert expected["products"] and expected["orders"]
    assert await indexes(target) == expected
