"""Projector processes killed with SIGKILL: no event lost, none applied twice, order kept."""

from __future__ import annotations

import signal
import uuid

import redis.asyncio as aioredis

from events.store import EventStore
from tests.support.cluster import single_and_cluster
from tests.support.projectors import (
    Cli,
    Projector,
    SumView,
    append_adjustments,
    eventually,
    fold_log,
    group_state,
    lease_owners,
)

pytest_plugins = ["tests.support.fixtures"]
pytestmark = single_and_cluster

FAST = ("--lease-ms", "1500", "--block-ms", "300")


def products(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def finished(
    redis: aioredis.Redis, store: EventStore, view: SumView, group: str, total: int
) -> bool:
    state = await group_state(redis, store.keys.prefix, store.keys.partitions, group)
    return await view.applied() == total and state["pending"] == 0 and state["lag"] == 0


async def test_killed_projector_is_replaced_without_losing_or_doubling_events(
    cli: Cli, store: EventStore, redis_client: aioredis.Redis, view: SumView, sum_table: str
) -> None:
    items = products(40)
    first = cli.project("first", *FAST, "--batch", "20", env={"SUM_DELAY_MS": "50"})
    await first.started()
    await append_adjustments(store, items, 5_000)
    await eventually(lambda: _at_least(view, 1_000), what="the first projector to get going")

    first.kill9()
    state = await group_state(redis_client, store.keys.prefix, store.keys.partitions, sum_table)
    assert await view.applied() < 5_000
    assert state["pending"] > 0, "the kill should leave delivered, unacknowledged entries"

    await append_adjustments(store, items, 5_000)
    second = cli.project("second", *FAST, "--batch", "500")
    await eventually(
        lambda: finished(redis_client, store, view, sum_table, 10_000),
        what="the second projector to catch up",
    )

    assert await view.sums() == await fold_log(store)
    assert await view.order_violations() == []
    # What the first left pending is re-fed from the view's checkpoint (past it) or claimed
    # from the group (applied but not acknowledged before the kill).
    replayed = sum(line["replayed"] for line in second.logs("partition_resynced"))
    claimed = sum(line["count"] for line in second.logs("pending_claimed"))
    assert replayed + claimed >= state["pending"]


async def test_surviving_projector_takes_over_partitions_of_a_killed_one(
    cli: Cli, store: EventStore, redis_client: aioredis.Redis, view: SumView, sum_table: str
) -> None:
    items = products(40)
    parts = store.keys.partitions
    a = cli.project("a", *FAST, "--batch", "20", env={"SUM_DELAY_MS": "20"})
    b = cli.project("b", *FAST, "--batch", "20", env={"SUM_DELAY_MS": "20"})
    await a.started()
    await b.started()

    async def shared() -> bool:
        owners = set(
            (await lease_owners(redis_client, store.keys.prefix, parts, sum_table)).values()
        )
        return owners == {"a", "b"}

    # shared before the events come: else one of them may own every partition at first and
    # apply the whole backlog before it hands partitions over, leaving a nothing to apply
    await eventually(shared, what="both projectors to own partitions")
    await append_adjustments(store, items, 2_000)
    await eventually(lambda: _batches(a, 3), what="a to apply a few batches")

    a.kill9()
    await append_adjustments(store, items, 2_000)

    async def b_owns_all() -> bool:
        owners = await lease_owners(redis_client, store.keys.prefix, parts, sum_table)
        return set(owners.values()) == {"b"}

    await eventually(b_owns_all, what="b to take over a's partitions")
    await eventually(
        lambda: finished(redis_client, store, view, sum_table, 4_000),
        what="b to finish every partition",
    )
    assert await view.sums() == await fold_log(store)
    assert await view.order_violations() == []
    assert {line["partition"] for line in b.logs("lease_acquired")} == set(range(parts))


async def _at_least(view: SumView, n: int) -> bool:
    return await view.applied() >= n


async def _batches(projector: Projector, n: int) -> bool:
    return len(projector.logs("batch_applied")) >= n


async def test_a_paused_owner_that_lost_its_leases_gets_nothing_delivered(
    cli: Cli, store: EventStore, redis_client: aioredis.Redis, view: SumView, sum_table: str
) -> None:
    """SIGSTOP one projector past its lease: the other takes over; when the first resumes it
    must notice the loss, and per-aggregate order in the view must still hold."""
    items = products(40)
    parts = store.keys.partitions
    a = cli.project("a", *FAST, "--batch", "20", env={"SUM_DELAY_MS": "20"})
    b = cli.project("b", *FAST, "--batch", "20", env={"SUM_DELAY_MS": "20"})
    await a.started()
    await b.started()

    async def shared() -> bool:
        owners = set(
            (await lease_owners(redis_client, store.keys.prefix, parts, sum_table)).values()
        )
        return owners == {"a", "b"}

    # Share first, then append: appended earlier, the events could all be applied by
    # whichever process held every partition before the hand-over, leaving a idle.
    await eventually(shared, what="both projectors to own partitions")
    await append_adjustments(store, items, 1_000)
    await eventually(lambda: _batches(a, 3), what="a to apply a few batches")

    a.proc.send_signal(signal.SIGSTOP)
    try:
        await append_adjustments(store, items, 1_000)

        async def b_owns_all() -> bool:
            owners = await lease_owners(redis_client, store.keys.prefix, parts, sum_table)
            return set(owners.values()) == {"b"}

        await eventually(b_owns_all, what="b to take over a's partitions")
    finally:
        a.proc.send_signal(signal.SIGCONT)
    await append_adjustments(store, items, 1_000)
    await eventually(lambda: _logged(a, "lease_lost"), what="a to notice it lost its leases")
    await eventually(
        lambda: finished(redis_client, store, view, sum_table, 3_000),
        what="every event to be applied",
    )
    assert await view.sums() == await fold_log(store)
    assert await view.order_violations() == []
    assert a.proc.poll() is None and b.proc.poll() is None


async def _logged(projector: Projector, event: str) -> bool:
    return bool(projector.logs(event))
