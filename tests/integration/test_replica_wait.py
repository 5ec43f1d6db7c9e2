"""``REDIS_WAIT_REPLICAS``: an append is acknowledged only once a replica holds it (issue #19).

A real primary (AOF, fsync always) and a real ``redis-server --replicaof`` on loopback
ports, started here; the replica is killed with ``-9`` to show the unconfirmed case.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from app.settings import Settings
from events.connection import connect
from events.durability import ReplicasBehind, ReplicaWait, supports_waitaof
from events.ids import uuid7
from events.keys import Keys
from events.store import Append, EventStore
from events.types import AccountCreated
from scripts.servers import DURABLE_REDIS_ARGS, free_port, redis_server, stop
from tests.support.cluster import RedisClusterNodes

WAIT = ReplicaWait(replicas=1, timeout_ms=300)


def AcknowledgedStore(client: Any, keys: Keys, wait: ReplicaWait) -> EventStore:
    """The store as the API builds it with ``REDIS_WAIT_REPLICAS`` set."""
    return EventStore(client, keys, replica_wait=wait)


@dataclass
class Pair:
    primary_url: str
    replica_url: str
    replica: subprocess.Popen[bytes]


def _poll(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with (
        tempfile.TemporaryDirectory(prefix="sstest-primary-") as primary_dir,
        tempfile.TemporaryDirectory(prefix="sstest-replica-") as replica_dir,
        redis_server(primary_dir, *DURABLE_REDIS_ARGS) as primary_url,
    ):
        host_port = primary_url.removeprefix("redis://").split("/")[0]
        host, port = host_port.split(":")
        replica_port = free_port()
        replica = subprocess.Popen(
            [
                *("redis-server", "--port", str(replica_port), "--bind", "127.0.0.1"),
                *("--dir", replica_dir, *DURABLE_REDIS_ARGS, "--replicaof", host, port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with redis.Redis.from_url(primary_url) as primary:

                def online() -> bool:
                    info = primary.info("replication")
                    return "online" in str(info.get("slave0", {}).get("state", ""))

                _poll(online, "the replica never came online")
            yield Pair(primary_url, f"redis://127.0.0.1:{replica_port}/0", replica)
        finally:
            stop(replica)


@pytest.fixture
async def primary(pair: Pair) -> AsyncIterator[aioredis.Redis]:
    client = connect(pair.primary_url, cluster=False)
    yield client
    await client.aclose()


def account() -> AccountCreated:
    return AccountCreated(
        account_id=uuid7(), email="ana@example.com", name="Ana", password_hash="h"
    )


async def test_an_append_returns_once_the_replica_holds_it(
    pair: Pair, primary: aioredis.Redis
) -> None:
    keys = Keys(prefix="sstest-wait", partitions=4)
    store = AcknowledgedStore(primary, keys, WAIT)
    await store.load_functions()
    event = account()
    [(partition, entry)] = (await store.append(Append(events=[event]))).entry_ids
    # WAIT answered 1: the replica has the entry now, with no polling on this side.
    with redis.Redis.from_url(pair.replica_url) as replica:
        assert [i for i, _ in replica.xrange(keys.log(partition))] == [entry.encode()]


async def test_with_the_replica_killed_the_append_is_reported_unconfirmed(
    pair: Pair, primary: aioredis.Redis
) -> None:
    keys = Keys(prefix="sstest-wait", partitions=4)
    store = AcknowledgedStore(primary, keys, WAIT)
    await store.load_functions()
    pair.replica.kill()
    pair.replica.wait()
    event = account()
    with pytest.raises(ReplicasBehind, match=r"0 of 1 replica\(s\) acknowledged it within 300 ms"):
        await store.append(Append(events=[event], idempotency_key="k-1", result="r"))
    # Reported as an error, yet applied on the primary: it is in the log (and its AOF) ...
    log = [e async for e in _all(primary, keys)]
    assert [e[b"type"] for e in log] == [b"AccountCreated"]
    # ... and the retry with the same key is answered from the idempotency record, not applied twice.
    plain = EventStore(primary, keys)
    replay = await plain.append(Append(events=[account()], idempotency_key="k-1", result="r"))
    assert replay.duplicate
    assert len([e async for e in _all(primary, keys)]) == 1


async def test_without_the_setting_the_append_does_not_wait(
    pair: Pair, primary: aioredis.Redis
) -> None:
    store = EventStore(primary, Keys(prefix="sstest-nowait", partitions=4))
    await store.load_functions()
    pair.replica.kill()
    pair.replica.wait()
    assert (await store.append(Append(events=[account()]))).entry_ids


async def test_waitaof_is_detected_from_the_server_version(primary: aioredis.Redis) -> None:
    version = tuple(int(p) for p in str((await primary.info("server"))["redis_version"]).split("."))
    assert await supports_waitaof(primary) == (version[:2] >= (7, 2))
    if not await supports_waitaof(primary):
        pytest.skip(f"Redis {version} has no WAITAOF (7.2+); WAIT only")
    store = AcknowledgedStore(primary, Keys(prefix="sstest-aof", partitions=4), WAIT_AOF)
    await store.load_functions()
    assert (await store.append(Append(events=[account()]))).entry_ids


WAIT_AOF = ReplicaWait(replicas=1, timeout_ms=300, aof=True)


async def test_on_a_cluster_the_wait_goes_to_the_primary_owning_the_slot(
    redis_cluster: RedisClusterNodes, prefix: str
) -> None:
    client = connect(redis_cluster.url, cluster=True)
    try:
        keys = Keys(prefix=prefix, partitions=4)
        store = AcknowledgedStore(client, keys, WAIT)
        await store.load_functions()
        event = account()
        # The test cluster has no replicas: the primary applies it, WAIT 1 cannot be met.
        with pytest.raises(ReplicasBehind, match="0 of 1"):
            await store.append(Append(events=[event]))
        partition = keys.partition_of(event.aggregate())
        assert await client.xlen(keys.log(partition)) == 1
    finally:
        await client.aclose()


def test_settings_read_the_wait_from_the_environment() -> None:
    assert Settings.from_env({}).redis.replica_wait is None
    env = {"REDIS_WAIT_REPLICAS": "2", "REDIS_WAIT_TIMEOUT_MS": "250"}
    assert Settings.from_env(env).redis.replica_wait == ReplicaWait(replicas=2, timeout_ms=250)
    with pytest.raises(ValueError, match="WAIT 0 blocks"):
        ReplicaWait(replicas=1, timeout_ms=0)


async def _all(client: aioredis.Redis, keys: Keys) -> AsyncIterator[dict[bytes, bytes]]:
    for log in keys.logs():
        for _, fields in await client.xrange(log):
            yield fields
