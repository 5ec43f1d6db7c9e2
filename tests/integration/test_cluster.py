"""The event store on a real three-primary Redis Cluster: where its library lives, and
what it does with an append that spans hash slots (issue #19)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster

from events.errors import RedisNotSuitable, SlotsDiffer
from events.ids import uuid7
from events.store import LIBRARY, Append, EventStore, check_redis
from events.types import AccountCreated
from workers.leases import Leases
from workers.runner import ProjectorRunner, blocking_client
from workers.views import ViewPointers

pytestmark = pytest.mark.parametrize("redis_client", ["cluster"], indirect=True)


def account() -> AccountCreated:
    return AccountCreated(
        account_id=uuid7(), email=f"{uuid7()}@example.com", name="Ana", password_hash="h"
    )


def accounts_in_two_partitions(store: EventStore) -> tuple[AccountCreated, AccountCreated]:
    first = account()
    while True:
        other = account()
        if store.keys.partition_of(other.aggregate()) != store.keys.partition_of(first.aggregate()):
            return first, other


async def _libraries(cluster: RedisCluster) -> dict[str, bool]:
    listed = {}
    for node in cluster.get_primaries():
        reply = await cluster.execute_command(
            "FUNCTION LIST", "LIBRARYNAME", LIBRARY, target_nodes=node
        )
        listed[node.name] = bool(reply)
    return listed


async def test_the_library_is_loaded_on_every_primary(store: EventStore) -> None:
    listed = await _libraries(store.redis)
    assert len(listed) == 3
    assert all(listed.values()), listed
    assert await store.functions_loaded()


async def test_a_primary_that_lost_the_library_gets_it_back_on_the_next_append(
    store: EventStore,
) -> None:
    event = account()
    owner = store.redis.get_node_from_key(
        store.keys.log(store.keys.partition_of(event.aggregate()))
    )
    await store.redis.execute_command("FUNCTION FLUSH", target_nodes=owner)
    assert not await store.functions_loaded()

    await store.append(Append(events=[event], expect={event.aggregate(): 0}))

    assert (await store.state(event.aggregate()))["v"] == "1"
    assert all((await _libraries(store.redis)).values())


async def test_an_append_spanning_slots_is_refused_whole_and_names_the_slots(
    store: EventStore,
) -> None:
    first, other = accounts_in_two_partitions(store)
    with pytest.raises(SlotsDiffer) as caught:
        await store.append(Append(events=[first, other]))
    assert len(caught.value.slots) == 2
    assert await store.count() == 0


async def test_appends_of_aggregates_in_every_partition_land_on_their_own_slots(
    store: EventStore,
) -> None:
    by_partition: dict[int, AccountCreated] = {}
    while len(by_partition) < store.keys.partitions:
        event = account()
        by_partition.setdefault(store.keys.partition_of(event.aggregate()), event)
    for event in by_partition.values():
        await store.append(Append(events=[event], expect={event.aggregate(): 0}))
    owners = {store.redis.get_node_from_key(store.keys.log(p)).name for p in by_partition}
    assert len(owners) > 1
    assert await store.count() == store.keys.partitions


async def test_a_lease_fences_group_reads_of_every_partition_on_the_cluster(
    store: EventStore,
) -> None:
    """The fenced read touches the lease and the log of one partition: one slot."""
    leases = Leases(store.redis, store.keys, holder="worker-a", ttl_ms=5000)
    rival = Leases(store.redis, store.keys, holder="worker-b", ttl_ms=5000)
    event = account()
    await store.append(Append(events=[event], expect={event.aggregate(): 0}))
    home = store.keys.partition_of(event.aggregate())
    for p in range(store.keys.partitions):
        await store.redis.xgroup_create(store.keys.log(p), "proj", id="0", mkstream=True)
        held = await leases.acquire("proj", p)
        assert held is not None and await rival.acquire("proj", p) is None
        assert await rival.fenced_read("proj", p, "c", 10, ">") is None
        entries = await leases.fenced_read("proj", p, "c", 10, ">")
        assert entries is not None and len(entries) == (1 if p == home else 0)
        assert await leases.renew(held)
        assert await leases.release("proj", p)


async def test_the_rebuild_switch_moves_a_view_pointer_on_the_cluster(store: EventStore) -> None:
    """Pause, pointer and previous of a view share the view's hash tag: one slot."""
    pointers = ViewPointers(store.redis, store.keys.prefix)
    await pointers.set("orders", "v1")
    assert await pointers.pause("orders", "tok", 5000)
    assert await pointers.switch("orders", "v2", "tok")
    assert await pointers.current("orders") == "v2"
    assert await pointers.previous("orders") == "v1"
    assert not await pointers.switch("orders", "v3", "someone-else")


async def test_a_primary_that_may_evict_is_refused_at_startup(store: EventStore) -> None:
    cluster: RedisCluster = store.redis
    default = cluster.get_default_node()
    other = next(n for n in cluster.get_primaries() if n.name != default.name)
    await cluster.config_set("maxmemory-policy", "allkeys-lru", target_nodes=other)
    try:
        with pytest.raises(RedisNotSuitable, match=other.name):
            await check_redis(cluster)
    finally:
        await cluster.config_set("maxmemory-policy", "noeviction", target_nodes=other)
    assert await check_redis(cluster) is not None


async def test_the_blocking_reader_of_a_worker_is_a_cluster_client_too(store: EventStore) -> None:
    reader = blocking_client(store.redis, block_ms=100)
    try:
        assert isinstance(reader, RedisCluster)
        event = account()
        await store.append(Append(events=[event], expect={event.aggregate(): 0}))
        log = store.keys.log(store.keys.partition_of(event.aggregate()))
        [(stream, entries)] = await reader.xread({log: "0"}, block=100)
        assert stream.decode() == log and len(entries) == 1
        assert await reader.xread({log: entries[0][0]}, block=100) == []
    finally:
        await reader.aclose()


async def test_a_projection_runner_on_the_cluster_shuts_down_cleanly(store: EventStore) -> None:
    """Its own blocking reader is a cluster client, which has no single connection pool:
    the shutdown closed it and then crashed on ``connection_pool`` (exit 1 instead of 0)."""
    runner = ProjectorRunner(store.redis, store.keys, [], consumer=f"c-{uuid7()}", lease_ms=300)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.3)
    runner.stop()
    await asyncio.wait_for(task, timeout=10)


async def test_the_blocking_reader_knows_every_node_not_only_the_default_one(
    store: EventStore,
) -> None:
    """A worker starting while its default node is down (a primary's restart) must still
    reach the cluster through the others."""
    reader = blocking_client(store.redis, block_ms=100)
    try:
        known = {(n.host, n.port) for n in store.redis.get_nodes()}
        assert {(n.host, n.port) for n in reader.nodes_manager.startup_nodes.values()} == known
    finally:
        await reader.aclose()


async def test_the_read_models_find_account_keys_whatever_node_their_url_names(
    store: EventStore, prefix: str
) -> None:
    """The read models' key store on a cluster whose ``REDIS_URL`` node does not own the
    key hash's slot: a plain client got MOVED there and the view stalled (fault run)."""
    from app.settings import RedisSettings, Settings
    from projections.read_models.factory import read_models

    url_node = store.redis.get_nodes()[0]
    n = 0
    while True:
        scoped = f"{prefix}:k{n}"
        slot = store.redis.keyslot(f"{scoped}:pii:keys")
        if store.redis.nodes_manager.get_node_from_slot(slot).name != url_node.name:
            break
        n += 1
    url = f"redis://{url_node.host}:{url_node.port}/0"
    settings = Settings(redis=RedisSettings(url=url, prefix=scoped, partitions=4, cluster=True))
    subject = f"account:{uuid7()}"
    await store.redis.hset(f"{scoped}:pii:keys", subject, b"k" * 32)
    try:
        async with read_models(settings) as projection:
            assert projection.personal is not None
            opener = await projection.personal.opener([subject])
            assert opener.keys[subject] == b"k" * 32
    finally:
        await store.redis.delete(f"{scoped}:pii:keys")
