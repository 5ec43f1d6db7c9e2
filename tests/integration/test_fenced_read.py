"""The projector's fenced group read, on one node and on the cluster."""

from __future__ import annotations

from events.store import Append, EventStore
from tests.integration.test_cluster import account
from tests.support.cluster import single_and_cluster
from workers.leases import Leases

pytestmark = single_and_cluster


async def test_a_read_sent_again_gets_what_an_unanswered_read_delivered(store: EventStore) -> None:
    """redis-py re-sends a command whose connection broke; if the first send was executed
    and only its reply lost, a ``>`` read sent again must hand over the same entries, not
    the next ones (which would leave the first below the checkpoint for good)."""
    leases = Leases(store.redis, store.keys, holder="worker-a", ttl_ms=5000)
    events = [account() for _ in range(40)]
    for event in events:
        await store.append(Append(events=[event], expect={event.aggregate(): 0}))
    p = max(
        range(store.keys.partitions),
        key=lambda n: sum(store.keys.partition_of(e.aggregate()) == n for e in events),
    )
    await store.redis.xgroup_create(store.keys.log(p), "proj", id="0", mkstream=True)
    assert await leases.acquire("proj", p) is not None
    lost = await leases.fenced_read("proj", p, "c", 2, ">")  # executed; its reply "lost"
    assert lost is not None and len(lost) == 2
    again = await leases.fenced_read("proj", p, "c", 2, ">")  # the library's re-send
    assert again == lost
    await store.redis.xack(store.keys.log(p), "proj", *[eid for eid, _ in lost])
    after = await leases.fenced_read("proj", p, "c", 2, ">")
    assert after is not None and after and after[0][0] > lost[-1][0]
