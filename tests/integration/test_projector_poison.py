"""Poison entries: retried, dead-lettered with their error, counted, listed and re-driven."""

from __future__ import annotations

import json
import uuid

import redis.asyncio as aioredis

from events.codec import FIELDS
from events.ids import now_at, uuid7
from events.store import EventStore
from tests.support.projectors import (
    Cli,
    SumView,
    append_adjustments,
    eventually,
    fold_log,
    group_state,
)
from workers.dlq import DeadLetters, metrics_key

pytest_plugins = ["tests.support.fixtures"]


async def append_malformed(store: EventStore, product: str) -> str:
    """An entry no reader can decode (an unknown type), as a buggy producer would write it."""
    aggregate = f"product:{product}"
    values = {
        "id": uuid7(),
        "type": "StockRecounted",
        "schema": "1",
        "aggregate": aggregate,
        "seq": "999",
        "at": now_at(),
        "actor": "legacy",
        "correlation": "",
        "causation": "",
        "source": "ingest:legacy",
        "data": json.dumps({"type": "StockRecounted", "product_id": product, "count": 7}),
    }
    entry_id = await store.redis.xadd(
        store.keys.log(store.keys.partition_of(aggregate)), {k: values[k] for k in FIELDS}
    )
    return entry_id.decode()


async def test_poison_entries_are_dead_lettered_and_later_events_applied(
    cli: Cli, store: EventStore, redis_client: aioredis.Redis, view: SumView, sum_table: str
) -> None:
    target = str(uuid.uuid4())
    others = [str(uuid.uuid4()) for _ in range(8)]
    partition = store.keys.partition_of(f"product:{target}")
    projector = cli.project(
        "p",
        "--lease-ms",
        "1500",
        "--block-ms",
        "300",
        "--max-attempts",
        "3",
        "--retry-ms",
        "20",
        env={"SUM_FAIL_REASON": "poison"},
    )
    await projector.started()
    await append_adjustments(store, [target, *others], 90)
    malformed_id = await append_malformed(store, target)
    await append_adjustments(store, [target], 1, reason="poison")
    poison_id = (await store.read_raw(partition, malformed_id, 1))[0][0]
    await append_adjustments(store, [target, *others], 90)

    dead = DeadLetters(redis_client, store.keys)

    async def settled() -> bool:
        state = await group_state(redis_client, store.keys.prefix, store.keys.partitions, sum_table)
        return (
            await view.applied() == 180
            and state["pending"] == 0
            and state["lag"] == 0
            and len(await dead.list(sum_table)) == 2
        )

    await eventually(settled, what="later events applied and two dead letters")

    letters = {letter.entry_id: letter for letter in await dead.list(sum_table)}
    assert set(letters) == {malformed_id, poison_id}
    for entry_id, letter in letters.items():
        [(_, original)] = await redis_client.xrange(
            store.keys.log(partition), min=entry_id, max=entry_id
        )
        assert letter.fields == original
        assert letter.partition == partition
        assert letter.attempts == 3
    assert "unknown event type 'StockRecounted'" in letters[malformed_id].error
    assert "PoisonEvent" in letters[poison_id].error
    metrics = await redis_client.hgetall(metrics_key(store.keys, sum_table))
    assert metrics[b"dead_letters"] == b"2"
    assert await view.sums() == await fold_log(store, skip_reason="poison")
    logged = {line["entry_id"] for line in projector.logs("dead_lettered")}
    assert logged == {malformed_id, poison_id}

    projector.terminate()
    assert await projector.wait() == 0

    listed = cli.run("dlq", "list", sum_table, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {row["entry_id"] for row in rows} == {malformed_id, poison_id}

    # The apply bug is fixed (no SUM_FAIL_REASON); the decoder still cannot read the entry.
    retried = cli.run("dlq", "retry", "tests.support.sum_projection:factory")
    assert retried.returncode == 1, retried.stdout + retried.stderr
    assert f"redriven  {sum_table}" in retried.stdout
    assert "StockRecounted" in retried.stdout
    remaining = await dead.list(sum_table)
    assert [letter.entry_id for letter in remaining] == [malformed_id]
    assert await view.sums() == await fold_log(store)
    metrics = await redis_client.hgetall(metrics_key(store.keys, sum_table))
    assert metrics[b"redriven"] == b"1"
