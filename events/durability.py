"""Acknowledge an append only once replicas hold it (``REDIS_WAIT_REPLICAS``, issue #19).

Redis replicates asynchronously: a primary answers an ``FCALL`` as soon as it has applied
it (and, with ``appendfsync always``, fsynced its own AOF). If that primary dies before a
replica has received the write, a failover promotes a replica without it, and an append
the client was told succeeded is gone. ``WAIT numreplicas timeout`` closes that window:
it blocks until ``numreplicas`` replicas have acknowledged every write made *on the same
connection*, or the timeout passes. On Redis >= 7.2 ``WAITAOF numlocal numreplicas
timeout`` is stronger still (the replicas have fsynced the write to their AOF, not just
received it); :func:`supports_waitaof` tells which one the server has.

What an error means: when fewer replicas acknowledge in time, :func:`fcall_acknowledged`
raises :class:`ReplicasBehind`, but the write has already been applied on the primary
(and is in its AOF): it is *not confirmed*, not *not done*. The client retries with the
same ``Idempotency-Key``; the append's idempotency record answers the retry with the first
outcome, and the retry's own ``WAIT`` confirms it once the replicas are back.

The wrapper is what the store's ``fcall`` calls instead of ``redis.fcall`` when a
:class:`ReplicaWait` is configured (``RedisSettings.replica_wait``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from events.errors import EventStoreError


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """How many replicas must hold a write before it is acknowledged, and for how long to wait."""

    replicas: int
    """``numreplicas`` of ``WAIT``/``WAITAOF``; at least 1 (0 means: no wait, no wrapper)."""
    timeout_ms: int = 1000
    """How long an append may wait for them; then :class:`ReplicasBehind`. Never 0: ``WAIT
    … 0`` blocks for ever, and a command must not hang while its replicas are down."""
    aof: bool = False
    """Use ``WAITAOF 1 replicas timeout`` (Redis >= 7.2: the replicas fsynced the write)
    instead of ``WAIT`` (they received it). :func:`supports_waitaof` tells."""

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("ReplicaWait needs replicas >= 1 (no wait: configure none)")
        if self.timeout_ms < 1:
            raise ValueError("ReplicaWait needs timeout_ms >= 1 (WAIT 0 blocks for ever)")

    def command(self) -> tuple[str | int, ...]:
        if self.aof:
            return ("WAITAOF", 1, self.replicas, self.timeout_ms)
        return ("WAIT", self.replicas, self.timeout_ms)

    def acknowledged(self, reply: Any) -> int:
        """The number of replicas that hold the write, from ``WAIT``'s or ``WAITAOF``'s reply."""
        return int(reply[1]) if self.aof else int(reply)


class ReplicasBehind(EventStoreError):
    """The primary applied the write, but fewer replicas than required acknowledged it in time.

    The write may well survive (it is in the primary's AOF); it is reported as an error
    because a failover now could lose it. Retry with the same idempotency key.
    """

    def __init__(self, function: str, wait: ReplicaWait, acknowledged: int) -> None:
        super().__init__(
            f"{function}: applied on the primary, but {acknowledged} of {wait.replicas} "
            f"replica(s) acknowledged it within {wait.timeout_ms} ms ({wait.command()[0]}); "
            "not confirmed durable across a failover, retry with the same idempotency key"
        )
        self.function = function
        self.required = wait.replicas
        self.acknowledged = acknowledged
        self.timeout_ms = wait.timeout_ms


async def supports_waitaof(redis: Any) -> bool:
    """The server has ``WAITAOF`` (Redis >= 7.2). On a cluster, asks one node (they are
    expected to run one version)."""
    info = await redis.info("server")
    if isinstance(redis, RedisCluster):  # one dict per node
        info = next(iter(info.values())) if "redis_version" not in info else info
    major, minor, *_ = (int(part) for part in str(info["redis_version"]).split("."))
    return (major, minor) >= (7, 2)


async def fcall_acknowledged(
    redis: Any, wait: ReplicaWait, function: str, keys: list[str], *args: str | bytes
) -> Any:
    """``FCALL function`` then ``WAIT`` (or ``WAITAOF``) on one connection, in one round trip.

    Returns the function's reply; raises what ``FCALL`` raised (a ``ResponseError`` such as
    ``Function not found`` comes out unchanged, so the store's reload still works), else
    :class:`ReplicasBehind` when fewer than ``wait.replicas`` replicas acknowledged.

    The two commands must share a connection: ``WAIT`` counts the writes of the connection
    it is sent on, so a ``WAIT`` from the pool's next free connection could confirm nothing.
    On a cluster they go to the primary owning ``keys[0]``'s slot (every key of one
    ``FCALL`` shares it).
    """
    if isinstance(redis, RedisCluster):
        reply, acked = await _on_cluster(redis, wait, function, keys, *args)
    else:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.fcall(function, len(keys), *keys, *args)
            pipe.execute_command(*wait.command())
            reply, acked = await pipe.execute(raise_on_error=False)
    if isinstance(reply, Exception):
        raise reply
    if isinstance(acked, Exception):
        raise acked
    count = wait.acknowledged(acked)
    if count < wait.replicas:
        raise ReplicasBehind(function, wait, count)
    return reply


async def _on_cluster(
    redis: RedisCluster, wait: ReplicaWait, function: str, keys: list[str], *args: str | bytes
) -> tuple[Any, Any]:
    """Both commands on one connection of the primary that owns the keys' slot.

    redis-py's cluster client sends a keyless ``WAIT`` to every primary on connections of
    their own, so this takes a connection of the right node and reads both replies off it.
    A ``MOVED`` (the slot moved since the client's map) comes back as the ``FCALL``'s error.
    """
    if not keys:
        raise ValueError("fcall_acknowledged on a cluster needs the keys naming the slot")
    await redis.initialize()  # a no-op once the client has its slot map
    node = redis.get_node_from_key(keys[0])
    connection = node.acquire_connection()
    try:
        await connection.connect()
        commands = [("FCALL", function, len(keys), *keys, *args), wait.command()]
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:  # an error reply: keep reading, the next is queued
                replies.append(exc)
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        node.release(connection)
    return replies[0], replies[1]
