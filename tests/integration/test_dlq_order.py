"""Per-aggregate order with sequenced dead letters: a later event of a parked aggregate is
never applied before the entry that failed; a retry applies the sequence in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from events.store import EventStore
from tests.support.projectors import SumView, append_adjustments, eventually, group_state
from tests.support.sum_projection import SumProjection
from workers.dlq import DeadLetters
from workers.runner import ProjectorRunner


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=0, max_size=4)
    yield pool
    await pool.close()


async def applied_seqs(view: SumView, aggregate: str) -> list[int]:
    rows = await view._fetch(
        f"SELECT seq FROM {view.table}_applied WHERE aggregate = '{aggregate}' ORDER BY n"
    )
    return [int(r["seq"]) for r in rows]


async def test_later_events_of_a_parked_aggregate_wait_behind_the_failed_one(
    redis_client: aioredis.Redis, store: EventStore, pool: asyncpg.Pool, pg_dsn: str
) -> None:
    table = f"sums_{uuid.uuid4().hex[:8]}"
    target, others = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(5)]
    failing = SumProjection(pool, table, fail_reason="poison")
    await failing.setup()
    view = SumView(pg_dsn, table)
    dead = DeadLetters(redis_client, store.keys)
    runner = ProjectorRunner(
        redis_client,
        store.keys,
        [failing],
        consumer="solo",
        batch=7,
        block_ms=100,
        lease_ms=3000,
        max_attempts=2,
        retry_base_ms=10,
    )
    await append_adjustments(store, [target], 5, per_append=1)
    await append_adjustments(store, [target], 1, reason="poison")  # seq 6 fails
    for _ in range(6):  # seq 7..12, interleaved with other aggregates' events
        await append_adjustments(store, [target], 1)
        await append_adjustments(store, others, 5)
    task = asyncio.create_task(runner.run())
    try:

        async def settled() -> bool:
            state = await group_state(redis_client, store.keys.prefix, store.keys.partitions, table)
            dead_letters = await redis_client.xlen(store.keys.dlq(table))
            return state["pending"] == 0 and state["lag"] == 0 and dead_letters > 0

        await eventually(settled, what="other aggregates applied, the target parked")
        assert await applied_seqs(view, f"product:{target}") == [1, 2, 3, 4, 5]
        assert await view.applied() == 35
        [sequence] = await dead.sequences(table)
        assert sequence.sequence == f"product:{target}"
        assert [letter.fields[b"seq"] for letter in sequence.letters] == [
            str(seq).encode() for seq in range(6, 13)
        ]

        # The head fails again: the whole sequence stays parked, nothing of it applied.
        outcome = await dead.retry(failing, sequence)
        assert outcome.redriven == [] and outcome.failed == sequence.head
        assert len((await dead.sequences(table))[0].letters) == 7
        assert await applied_seqs(view, f"product:{target}") == [1, 2, 3, 4, 5]

        # Fixed: the sequence is applied in order, and the aggregate flows again.
        outcome = await dead.retry(SumProjection(pool, table), sequence)
        assert outcome.failed is None and len(outcome.redriven) == 7
        assert await dead.count(table) == 0
        await append_adjustments(store, [target], 1)

        async def flowing() -> bool:
            return len(await applied_seqs(view, f"product:{target}")) == 13

        await eventually(flowing, what="the target applied as usual again")
    finally:
        runner.stop()
        await asyncio.wait_for(task, 15)
    assert await applied_seqs(view, f"product:{target}") == list(range(1, 14))
    assert await view.order_violations() == []
