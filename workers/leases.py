"""Partition leases: which process owns which (projection, partition), and who is alive.

A lease is a Redis string ``{prefix}:lease:{projection}:{pN}`` holding the owner's name,
with a TTL. It is taken with ``SET NX PX``, renewed and released by compare-and-set scripts
(so nobody extends or deletes a lease they lost), and taken over by anyone once it expires.

The lease and the partition's log stream share the hash tag ``{pN}``, so :data:`FENCED_READ`
can check the lease and read the consumer group in one atomic script: a process that lost
its lease can never get entries delivered to it (a fencing check, not just a timer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from events.keys import Keys

RENEW_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

DELETE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
"""Compare-and-set on a token-holding key (a lease, a rebuild's pause or lock): only the
holder (ARGV[1]) may renew it (ARGV[2] ms) or give it up."""

FENCED_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local start = ARGV[5]
if start == '>' then
  local own = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                         'STREAMS', KEYS[2], '0')
  if own and #own[1][2] > 0 then
    return own[1][2]
  end
end
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                         'STREAMS', KEYS[2], start)
if not reply then
  return {}
end
return reply[1][2]
"""
"""KEYS: lease, log stream. ARGV: holder, group, consumer, count, start id (``>`` or an id).
Returns ``false`` when the caller does not hold the lease, else the delivered entries.

A ``>`` read first returns the consumer's own pending entries, if any. The runner
acknowledges every entry it is handed before it reads again, so its pending list is empty
at a ``>`` read unless a read's reply was lost, and then a ``>`` read would skip what the
lost one delivered. redis-py re-sends a command whose connection failed (its default
``Retry``, on one node and on a cluster), so the caller cannot see that a reply was lost;
the entries skipped lay below the checkpoint once later ones were applied, and the view
missed them for good (seen once in the cluster fault run: entries missing under the audit's
and the warehouse's checkpoints after a primary's ``kill -9``)."""

_HEARTBEAT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('ZCARD', KEYS[1])
"""


def members_key(keys: Keys, projection: str) -> str:
    """Sorted set of live processes running ``projection`` (score: heartbeat expiry, ms)."""
    return f"{keys.prefix}:members:{projection}"


@dataclass(slots=True)
class Held:
    """Our view of one lease we hold: until when it is surely still ours (monotonic clock)."""

    projection: str
    partition: int
    valid_until: float

    def valid(self, margin: float = 0.0) -> bool:
        return time.monotonic() + margin < self.valid_until


class Leases:
    """Take, renew, release and inspect partition leases for one holder (a process)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, holder: str, ttl_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._renew = redis.register_script(RENEW_IF_HELD)
        self._release = redis.register_script(DELETE_IF_HELD)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._read = redis.register_script(FENCED_READ)

    def _deadline(self, started: float) -> float:
        # Redis started the TTL no earlier than we sent the command.
        return started + self.ttl_ms / 1000

    async def acquire(self, projection: str, partition: int) -> Held | None:
        """Take a free (or expired) lease; ``None`` when someone else holds it."""
        started = time.monotonic()
        ok = await self.redis.set(
            self.keys.lease(projection, partition), self.holder, nx=True, px=self.ttl_ms
        )
        if not ok:
            return None
        return Held(projection, partition, self._deadline(started))

    async def renew(self, held: Held) -> bool:
        """Extend a lease we hold; ``False`` when it is no longer ours."""
        started = time.monotonic()
        key = self.keys.lease(held.projection, held.partition)
        ok = await self._renew(keys=[key], args=[self.holder, self.ttl_ms])
        if ok:
            held.valid_until = self._deadline(started)
        return bool(ok)

    async def release(self, projection: str, partition: int) -> bool:
        """Give a lease up, only if it is still ours."""
        key = self.keys.lease(projection, partition)
        return bool(await self._release(keys=[key], args=[self.holder]))

    async def owner(self, projection: str, partition: int) -> str | None:
        raw = await self.redis.get(self.keys.lease(projection, partition))
        return raw.decode() if isinstance(raw, bytes) else raw

    async def heartbeat(self, projection: str) -> int:
        """Say we are alive for ``projection``; return how many processes are (us included)."""
        now_s, now_us = await self.redis.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        return int(
            await self._heartbeat(
                keys=[members_key(self.keys, projection)],
                args=[now_ms, now_ms + self.ttl_ms, self.holder, self.ttl_ms * 10],
            )
        )

    async def leave(self, projection: str) -> None:
        await self.redis.zrem(members_key(self.keys, projection), self.holder)

    async def fenced_read(
        self, projection: str, partition: int, consumer: str, count: int, start: str
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]] | None:
        """XREADGROUP on the partition only while we hold its lease (atomically checked).

        ``None``: the lease is not ours. Entries deleted from the stream come back with
        ``None`` fields (the log is never trimmed, but a PEL may outlive a test's stream).
        """
        reply = await self._read(
            keys=[self.keys.lease(projection, partition), self.keys.log(partition)],
            args=[self.holder, projection, consumer, count, start],
        )
        if reply is None:
            return None
        entries: list[tuple[bytes, dict[bytes, bytes] | None]] = []
        for entry_id, flat in reply:
            if not flat:
                entries.append((entry_id, None))
                continue
            it = iter(flat)
            entries.append((entry_id, dict(zip(it, it, strict=True))))
        return entries
