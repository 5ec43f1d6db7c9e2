"""SIGTERM: the batch in hand is finished and acknowledged, leases released, exit code 0."""

from __future__ import annotations

import json
import signal
import uuid

import redis.asyncio as aioredis

from events.store import EventStore
from tests.support.cluster import single_and_cluster
from tests.support.projectors import (
    Cli,
    SumView,
    append_adjustments,
    eventually,
    fold_log,
    group_state,
    lease_owners,
)

pytest_plugins = ["tests.support.fixtures"]
pytestmark = single_and_cluster


async def test_sigterm_finishes_the_batch_in_hand_and_releases_every_lease(
    cli: Cli, store: EventStore, redis_client: aioredis.Redis, view: SumView, sum_table: str
) -> None:
    products = [str(uuid.uuid4()) for _ in range(30)]
    parts = store.keys.partitions
    # At most 4 partitions x 10 entries per 100 ms: the 3,000 take 7.5 s or more.
    projector = cli.project(
        "p", "--lease-ms", "1500", "--block-ms", "300", "--batch", "10", env={"SUM_DELAY_MS": "100"}
    )
    await projector.started()
    await append_adjustments(store, products, 3_000)

    async def working() -> bool:
        return await view.applied() >= 100

    await eventually(working, what="the projector to apply some batches")
    projector.proc.send_signal(signal.SIGTERM)
    assert await projector.wait() == 0

    state = await group_state(redis_client, store.keys.prefix, parts, sum_table)
    assert state["pending"] == 0
    assert state["entries_read"] == await view.applied() < 3_000
    owners = await lease_owners(redis_client, store.keys.prefix, parts, sum_table)
    assert set(owners.values()) == {None}
    released = projector.logs("lease_released")
    assert sorted(line["partition"] for line in released) == list(range(parts))
    assert {line["reason"] for line in released} == {"shutdown"}

    after = [json.loads(line) for line in cli.run("lag", "--json").stdout.splitlines()]
    assert all(row["owner"] is None for row in after)
    assert sum(row["lag"] for row in after) == 3_000 - await view.applied()

    cli.project("q", "--lease-ms", "1500", "--block-ms", "300", "--batch", "500")

    async def finished() -> bool:
        state = await group_state(redis_client, store.keys.prefix, parts, sum_table)
        return await view.applied() == 3_000 and state["pending"] == 0 and state["lag"] == 0

    await eventually(finished, what="a new projector to finish")
    assert await view.sums() == await fold_log(store)
    assert await view.order_violations() == []
