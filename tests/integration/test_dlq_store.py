"""The sequenced dead-letter store on real Redis: what a writer of dead letters (the runner,
``rebuild --park-failures``) relies on."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from events.store import EventStore
from tests.support.cluster import single_and_cluster
from tests.support.memory_projection import RecordingProjection
from tests.support.projectors import append_adjustments
from workers.dlq import DeadLetters, metrics_key
from workers.rebuild import _withdraw

pytestmark = single_and_cluster
"""The park and remove scripts touch one view's keys: one slot on the cluster too."""


def entry(aggregate: str, seq: int) -> dict[bytes, bytes]:
    return {
        b"aggregate": aggregate.encode(),
        b"seq": str(seq).encode(),
        b"id": str(uuid.uuid4()).encode(),
    }


async def test_a_sequence_takes_later_entries_once_and_leaves_earlier_ones_to_the_caller(
    redis_client: aioredis.Redis, store: EventStore
) -> None:
    dead = DeadLetters(redis_client, store.keys)
    name = f"view_{uuid.uuid4().hex[:8]}"
    aggregate = f"product:{uuid.uuid4()}"
    head = await dead.put(name, 2, "100-0", entry(aggregate, 5), "Boom: refused", 3)
    assert await dead.parked(name, [aggregate, "product:other"]) == {aggregate}

    assert await dead.park(name, 2, "90-0", entry(aggregate, 4)) is None  # before the head
    follower = await dead.park(name, 2, "110-0", entry(aggregate, 6))
    assert follower is not None and follower != head
    assert await dead.park(name, 2, "110-0", entry(aggregate, 6)) == head  # re-delivered
    assert await dead.put(name, 2, "100-0", entry(aggregate, 5), "again", 3) == head
    assert await dead.park(name, 2, "5-0", entry("product:other", 1)) is None  # not parked

    [sequence] = await dead.sequences(name)
    assert [letter.dlq_id for letter in sequence.letters] == [head, follower]
    assert sequence.cause == "Boom: refused"
    assert sequence.letters[1].head == head
    metrics = await redis_client.hgetall(metrics_key(store.keys, name))
    assert metrics[b"parked"] == b"2" and metrics[b"dead_letters"] == b"1"
    assert metrics[b"parked_followers"] == b"1"

    assert await dead.discard(name, aggregate) == 2  # a rebuild taking its parking back
    assert await dead.parked(name, [aggregate]) == set()
    assert await dead.count(name) == 0
    assert await redis_client.hget(metrics_key(store.keys, name), "parked") == b"0"


async def test_a_retried_sequence_ends_and_its_aggregate_is_applied_again(
    redis_client: aioredis.Redis, store: EventStore
) -> None:
    dead = DeadLetters(redis_client, store.keys)
    projection = RecordingProjection(f"view_{uuid.uuid4().hex[:8]}")
    name = projection.name
    product = str(uuid.uuid4())
    await append_adjustments(store, [product], 3, per_append=1)
    partition = store.keys.partition_of(f"product:{product}")
    rows = await store.read_raw(partition, "0-0", 10)
    (first_id, first), *rest = rows
    await dead.put(name, partition, first_id, first, "Boom", 1)
    for entry_id, fields in rest:
        assert await dead.park(name, partition, entry_id, fields) is not None

    [sequence] = await dead.sequences(name)
    outcome = await dead.retry(projection, sequence)
    assert outcome.failed is None
    assert [letter.entry_id for letter in outcome.redriven] == [r[0] for r in rows]
    assert list(projection.applied) == [letter.event_id for letter in outcome.redriven]
    assert await dead.parked(name, [f"product:{product}"]) == set()
    assert await dead.park(name, partition, "99999999999999-0", rows[0][1]) is None


async def test_a_writer_names_the_aggregate_and_the_audit_parks_its_partition(
    redis_client: aioredis.Redis, store: EventStore
) -> None:
    dead = DeadLetters(redis_client, store.keys)
    name = f"view_{uuid.uuid4().hex[:8]}"
    await dead.put(name, 1, "7-0", None, "Boom", 1, aggregate="product:z")
    assert await dead.parked(name, ["product:z"]) == {"product:z"}
    assert await dead.park(name, 1, "8-0", None, aggregate="product:z") is not None

    await dead.put("audit", 3, "7-0", entry("order:a", 1), "Boom", 1)
    assert await dead.parked("audit", ["partition:3", "order:a"]) == {"partition:3"}
    assert await dead.park("audit", 3, "9-0", entry("order:b", 1)) is not None
    [sequence] = await dead.sequences("audit")
    assert [letter.entry_id for letter in sequence.letters] == ["7-0", "9-0"]


async def test_a_rebuild_withdraws_only_its_own_letters_and_keeps_the_bookkeeping_true(
    redis_client: aioredis.Redis, store: EventStore
) -> None:
    dead = DeadLetters(redis_client, store.keys)
    name = f"view_{uuid.uuid4().hex[:8]}"
    mine, theirs = f"product:{uuid.uuid4()}", f"product:{uuid.uuid4()}"
    head = await dead.put(name, 1, "100-0", entry(mine, 5), "Boom", 1)
    follower = await dead.put(name, 1, "110-0", entry(mine, 6), "parked behind 100-0", 0)
    live = await dead.put(name, 3, "120-0", entry(theirs, 2), "live failure", 3)

    await _withdraw(dead, name, [head, follower])  # what a rebuild that did not switch does

    assert await dead.parked(name, [mine, theirs]) == {theirs}
    assert [letter.dlq_id for letter in await dead.list(name)] == [live]
    # The withdrawn aggregate is no longer parked: the live runner applies its entries again.
    assert await dead.park(name, 1, "130-0", entry(mine, 7)) is None
