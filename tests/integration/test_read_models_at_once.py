"""A read-models batch is written at once: one transaction with its checkpoints, its new
documents as inserts, and the same documents as every write applied on its own.

The reference here applies each event's guarded writes one by one (``Write.op``), never a
fold, so a fold or an insert that does not equal the writes it stands for shows up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from events.store import EventStore
from projections.read_models import projection as projection_module
from projections.read_models.folding import Write
from projections.read_models.handlers import writes_for
from projections.read_models.projection import ReadModelsProjection, bulk_apply
from tests.integration.test_read_models_folding import (
    busy_shop,
    by_partition,
    documents,
    forget_checkpoints,
    view,
)


@pytest.fixture
def db(mongo_db: AsyncDatabase) -> AsyncDatabase:
    return mongo_db


async def write_by_write(db: AsyncDatabase, events: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """Every event's writes, each guarded on its own, in log order per partition."""
    projection = await view(db, "writes")
    for batch in by_partition(events).values():
        for rec in batch:
            write: Write
            for write in writes_for(rec):
                collection = projection.db[getattr(projection.collections, write.role)]
                await bulk_apply(collection, [write.op()])
    return await documents(projection)


async def test_concurrent_batches_equal_every_write_applied_on_its_own(
    store: EventStore, db: AsyncDatabase
) -> None:
    """Partitions handed in together are folded and written as one batch, so products are
    created in the same write as sales from other partitions: the stub (watermarks, negative
    stock) and the creation become one inserted document."""
    events = await busy_shop(store)
    expected = await write_by_write(db, events)
    folded = await view(db, "together")
    partitions = by_partition(events)
    await asyncio.gather(*(folded.apply(p, batch) for p, batch in partitions.items()))
    assert await documents(folded) == expected
    await forget_checkpoints(folded)  # a replay of the whole log changes nothing
    await asyncio.gather(*(folded.apply(p, batch) for p, batch in partitions.items()))
    assert await documents(folded) == expected


async def test_partitions_one_after_another_equal_every_write_applied_on_its_own(
    store: EventStore, db: AsyncDatabase
) -> None:
    """Later partitions meet the stubs earlier ones made: those are updated, not inserted."""
    events = await busy_shop(store)
    expected = await write_by_write(db, events)
    folded = await view(db, "in_turn")
    for partition, batch in by_partition(events).items():
        await folded.apply(partition, batch)
    assert await documents(folded) == expected


async def test_new_documents_of_a_batch_are_inserts(store: EventStore, db: AsyncDatabase) -> None:
    """On an empty view every document a batch creates is written by an insert (SecantusDB
    spends several times an insert's cost on an upsert). The server counts commands: one
    insert per collection of the view, and the only updates are the two on the checkpoints
    (moving them with the commit token, then clearing the token) and the record of the
    writer's session before its first transaction."""
    events = await busy_shop(store)
    folded = await view(db, "inserts")
    partitions = by_partition(events)
    before = (await db.client.admin.command("serverStatus"))["opcounters"]
    await asyncio.gather(*(folded.apply(p, batch) for p, batch in partitions.items()))
    after = (await db.client.admin.command("serverStatus"))["opcounters"]
    written = [role for role, docs in (await documents(folded)).items() if docs]
    assert (after["insert"] - before["insert"], after["update"] - before["update"]) == (
        len(written),
        3,
    )


async def test_a_batch_commits_its_documents_and_checkpoints_in_one_transaction(
    store: EventStore, db: AsyncDatabase
) -> None:
    """The checkpoint travels in the same write as the effects: every oplog entry the batch
    made, checkpoints included, belongs to one transaction; and the commit token the
    checkpoints carried until the journal was synced is gone."""
    events = await busy_shop(store)
    folded = await view(db, "one_txn")
    partitions = by_partition(events)
    oplog = db.client.local["oplog.rs"]
    last = await oplog.find({}).sort("$natural", -1).limit(1).to_list(1)
    since = last[0]["ts"]
    await asyncio.gather(*(folded.apply(p, batch) for p, batch in partitions.items()))
    names = {getattr(folded.collections, role) for role in ("accounts", "products", "orders")}
    checkpoints = folded.collections.checkpoints
    entries = await oplog.find({"ts": {"$gt": since}, "ns": {"$regex": f"^{db.name}\\."}}).to_list(
        None
    )
    written = [e for e in entries if e["ns"].split(".", 1)[1] in names | {checkpoints}]
    assert {e["ns"].split(".", 1)[1] for e in written} == names | {checkpoints}
    transactions = {(str(e.get("lsid")), e.get("txnNumber")) for e in written if e["op"] == "i"}
    assert len(transactions) == 1 and None not in next(iter(transactions))
    stored = await db[checkpoints].find({}).to_list(None)
    assert len(stored) == len(partitions)
    assert all("commit" not in doc for doc in stored)


async def test_a_writer_whose_session_a_newcomer_killed_goes_on(
    store: EventStore, db: AsyncDatabase
) -> None:
    """Two writers share a view (partitions split by their leases): each newcomer's first
    write for a partition kills the other's session, and the other's next transactions,
    in the same session, still apply. The view equals every write applied on its own."""
    events = await busy_shop(store)
    expected = await write_by_write(db, events)
    first = await view(db, "peers")
    second = ReadModelsProjection(first.db, first.collections)
    partitions = list(by_partition(events).items())
    for i, (partition, batch) in enumerate(partitions):
        half = len(batch) // 2
        await first.apply(partition, batch[:half])
        writer = second if i % 2 else first  # the second takes every other partition over
        await writer.apply(partition, batch[half:])
    recorded = await db[first.collections.sessions].find({}).to_list(None)
    assert len(recorded) == 2
    assert await documents(first) == expected


async def test_a_writer_that_stops_cleanly_leaves_no_session_to_kill(
    store: EventStore, db: AsyncDatabase
) -> None:
    events = await busy_shop(store)
    projection = await view(db, "closed")
    for partition, batch in by_partition(events).items():
        await projection.apply(partition, batch)
    sessions = db[projection.collections.sessions]
    assert await sessions.count_documents({}) == 1
    await projection.close()
    assert await sessions.count_documents({}) == 0


async def test_a_write_waits_for_the_partitions_of_the_last_one_then_goes_alone(
    store: EventStore, db: AsyncDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first partition back from a write waits for the others of that write, so that
    the documents they share are written once for all of them (``_join_partners``); one
    whose partners have nothing more to hand in is written alone once the wait is over.
    The wait is widened here so that the partner's lateness cannot outlast it."""
    monkeypatch.setattr(projection_module, "JOIN_SHARE", 1000.0)
    monkeypatch.setattr(projection_module, "JOIN_MAX_S", 5.0)
    events = await busy_shop(store)
    expected = await write_by_write(db, events)
    joined = await view(db, "joined")
    batches = by_partition(events)
    assert len(batches) >= 3, sorted(batches)
    first, second, *rest = sorted(batches)
    halves = {
        p: (batches[p][: len(batches[p]) // 2], batches[p][len(batches[p]) // 2 :]) for p in batches
    }
    await asyncio.gather(*(joined.apply(p, halves[p][0]) for p in (first, second)))
    assert joined._last_write[0] == {first, second}

    async def late(partition: int) -> None:
        await asyncio.sleep(0.05)
        await joined.apply(partition, halves[partition][1])

    await asyncio.gather(joined.apply(first, halves[first][1]), late(second))
    assert joined._last_write[0] == {first, second}

    monkeypatch.setattr(projection_module, "JOIN_MAX_S", 0.2)
    for p in rest:  # alone, after a write of two partitions: waits, then goes on
        await asyncio.wait_for(joined.apply(p, batches[p]), timeout=30)
        assert joined._last_write[0] == {p}
    assert await documents(joined) == expected
