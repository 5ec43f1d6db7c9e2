"""Poison entries: retried, dead-lettered with their error, parking the later entries of
their aggregate; counted, listed and re-driven in order."""

from __future__ import annotations

import json
import uuid

import redis.asyncio as aioredis

from events.codec import FIELDS
from events.ids import now_at, uuid7
from events.store import EventStore
from tests.support.cluster import single_and_cluster
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
pytestmark = single_and_cluster


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


async def test_poison_entries_park_their_aggregate_and_other_aggregates_go_on(
    cli: Cli, store: EventStore, redis_client: aioredis.Redis, view: SumView, sum_table: str
) -> None:
    target, odd = str(uuid.uuid4()), str(uuid.uuid4())
    others = [str(uuid.uuid4()) for _ in range(8)]
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
    malformed_id = await append_malformed(store, odd)
    await append_adjustments(store, [target], 1, reason="poison")
    partition = store.keys.partition_of(f"product:{target}")
    [(poison_id, _)] = await store.redis.xrevrange(store.keys.log(partition), count=1)
    poison_id = poison_id.decode()
    await append_adjustments(store, [target, *others], 90)  # 10 more for target: parked

    dead = DeadLetters(redis_client, store.keys)

    async def settled() -> bool:
        state = await group_state(redis_client, store.keys.prefix, store.keys.partitions, sum_table)
        return (
            await view.applied() == 170
            and state["pending"] == 0
            and state["lag"] == 0
            and await dead.count(sum_table) == 12
        )

    await eventually(settled, what="other aggregates applied and two parked sequences")

    sequences = {seq.sequence: seq for seq in await dead.sequences(sum_table)}
    assert set(sequences) == {f"product:{target}", f"product:{odd}"}
    parked = sequences[f"product:{target}"]
    assert parked.head.entry_id == poison_id
    assert len(parked.letters) == 11
    assert all(letter.head == parked.head.dlq_id for letter in parked.letters[1:])
    assert "PoisonEvent" in parked.cause
    assert parked.head.attempts == 3
    [malformed] = sequences[f"product:{odd}"].letters
    assert malformed.entry_id == malformed_id
    assert "unknown event type 'StockRecounted'" in malformed.error
    [(_, original)] = await redis_client.xrange(
        store.keys.log(malformed.partition), min=malformed_id, max=malformed_id
    )
    assert malformed.fields == original
    metrics = await redis_client.hgetall(metrics_key(store.keys, sum_table))
    assert metrics[b"dead_letters"] == b"2"
    assert metrics[b"parked_followers"] == b"10"
    assert metrics[b"parked"] == b"12"
    sums = await view.sums()
    expected = await fold_log(store, skip_reason="poison")
    assert {k: v for k, v in sums.items() if k != f"product:{target}"} == {
        k: v for k, v in expected.items() if k != f"product:{target}"
    }
    assert await view.order_violations() == []
    logged = {line["entry_id"] for line in projector.logs("dead_lettered")}
    assert logged == {malformed_id, poison_id}

    projector.terminate()
    assert await projector.wait() == 0

    listed = cli.run("dlq", "list", sum_table, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {json.loads(line)["sequence"]: json.loads(line) for line in listed.stdout.splitlines()}
    assert rows[f"product:{target}"]["count"] == 11
    assert rows[f"product:{target}"]["head_entry_id"] == poison_id
    assert "PoisonEvent" in rows[f"product:{target}"]["error"]
    assert rows[f"product:{target}"]["first_at"] <= rows[f"product:{target}"]["last_at"]
    assert rows[f"product:{odd}"]["head_entry_id"] == malformed_id
    text = cli.run("dlq", "list", sum_table)
    assert text.returncode == 0, text.stderr
    assert f"product:{target}  p{partition}  count=11  head={poison_id}" in text.stdout
    lag = cli.run("lag", sum_table, "--json")
    assert lag.returncode == 0, lag.stderr
    assert sum(json.loads(line)["parked"] for line in lag.stdout.splitlines()) == 12

    # The apply bug is fixed (no SUM_FAIL_REASON); the decoder still cannot read the entry.
    retried = cli.run("dlq", "retry", "tests.support.sum_projection:factory")
    assert retried.returncode == 1, retried.stdout + retried.stderr
    assert retried.stdout.count(f"redriven  {sum_table}") == 11
    assert "StockRecounted" in retried.stdout
    remaining = await dead.list(sum_table)
    assert [letter.entry_id for letter in remaining] == [malformed_id]
    assert await view.sums() == await fold_log(store)
    assert await view.order_violations() == []
    metrics = await redis_client.hgetall(metrics_key(store.keys, sum_table))
    assert metrics[b"redriven"] == b"11"
    assert metrics[b"parked"] == b"1"
