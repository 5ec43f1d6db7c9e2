"""The log's identity: one UUIDv7 per log, so a view can tell which log it was built from.

It lives at ``{prefix}:log:identity`` and is created with ``SET NX`` the first time the
store is initialised or appended to (:meth:`events.store.EventStore.identity`), before
the log's first entry is written. A log from before identities existed gets one on that
first touch, once: ``SET NX GET`` makes every concurrent caller read the same value.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from events.ids import uuid7
from events.keys import Keys


async def log_identity(redis: aioredis.Redis, keys: Keys) -> str:
    """The identity of the log under ``keys``, created (atomically, once) if it has none."""
    fresh = uuid7()
    old = await redis.set(keys.identity(), fresh, nx=True, get=True)
    if old is None:
        return fresh
    return old.decode() if isinstance(old, bytes) else str(old)


async def log_holds(redis: aioredis.Redis, keys: Keys, positions: dict[int, str]) -> bool:
    """Whether every ``partition → entry id`` of ``positions`` is an entry of this log.

    A view that records no identity (built before identities existed) is taken as this
    log's only when the entries its checkpoints name are here.
    """
    wanted = {p: e for p, e in positions.items() if e not in ("0", "0-0")}
    if not wanted:
        return True
    if any(p >= keys.partitions for p in wanted):
        return False
    async with redis.pipeline(transaction=False) as pipe:
        for p, entry in wanted.items():
            pipe.xrange(keys.log(p), min=entry, max=entry, count=1)
        replies = await pipe.execute()
    return all(bool(rows) for rows in replies)
