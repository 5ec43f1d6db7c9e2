"""Runners in one process: partitions are shared fairly and handed over gracefully — a
graceful hand-over finishes and acknowledges the batch in hand, so nothing is applied twice."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from events.store import EventStore
from tests.support.cluster import single_and_cluster
from tests.support.memory_projection import RecordingProjection
from tests.support.projectors import append_adjustments, eventually, group_state
from workers.runner import ProjectorRunner

pytestmark = single_and_cluster


def runner(
    redis: aioredis.Redis, store: EventStore, projection: RecordingProjection, name: str
) -> ProjectorRunner:
    return ProjectorRunner(
        redis, store.keys, [projection], consumer=name, batch=25, block_ms=200, lease_ms=3000
    )


async def test_partitions_are_shared_and_handed_back_without_double_delivery(
    redis_client: aioredis.Redis, store: EventStore
) -> None:
    name = f"rec_{uuid.uuid4().hex[:8]}"
    products = [str(uuid.uuid4()) for _ in range(24)]
    seen_by_a, seen_by_b = RecordingProjection(name), RecordingProjection(name)
    # One view seen through two processes: its checkpoint is the view's, so both share it.
    seen_by_b.checkpoints = seen_by_a.checkpoints
    a, b = runner(redis_client, store, seen_by_a, "a"), runner(redis_client, store, seen_by_b, "b")
    parts = store.keys.partitions
    task_a = asyncio.create_task(a.run())
    task_b: asyncio.Task[None] | None = None
    try:
        await append_adjustments(store, products, 600)

        async def a_owns_all() -> bool:
            return a.owned()[name] == list(range(parts))

        await eventually(a_owns_all, what="a alone to own every partition")

        task_b = asyncio.create_task(b.run())
        await append_adjustments(store, products, 600)

        async def halves() -> bool:
            return len(a.owned()[name]) == len(b.owned()[name]) == parts // 2

        await eventually(halves, what="a and b to own half the partitions each")
        await append_adjustments(store, products, 600)

        b.stop()
        await asyncio.wait_for(task_b, 10)
        await eventually(a_owns_all, what="a to take b's partitions back")

        async def done() -> bool:
            state = await group_state(redis_client, store.keys.prefix, parts, name)
            total = seen_by_a.applied + seen_by_b.applied
            return len(total) == 1_800 and state["pending"] == 0 and state["lag"] == 0

        await eventually(done, what="every event to be applied")
        total = seen_by_a.applied + seen_by_b.applied
        assert set(total.values()) == {1}, "a graceful hand-over never applies an event twice"
        assert seen_by_b.applied, "b did share the work"
    finally:
        a.stop()
        b.stop()
        await asyncio.wait_for(asyncio.gather(task_a, *([task_b] if task_b else [])), 10)
