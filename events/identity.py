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
from events.positions import parse_stream_id


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
    log's only when the entries its checkpoints name are here: in Redis, or, for an entry
    at or below the partition's archive marker, in the archive (read through the store's
    archive-aware reader, which takes the range from wherever it is now).
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
    missing = {p: e for (p, e), rows in zip(wanted.items(), replies, strict=True) if not rows}
    if not missing:
        return True
    from events.store import EventStore  # the store imports this module

    store = EventStore(redis, keys)
    archived = await store.archived()
    for p, entry in missing.items():
        marker = archived.get(p)
        if marker is None or parse_stream_id(entry) > parse_stream_id(marker):
            return False
        rows = await store.read_raw(p, _before(entry), 1, through=entry)
        if not rows or rows[0][0] != entry:
            return False
    return True


def _before(entry_id: str) -> str:
    """The greatest stream id below ``entry_id`` (``read_raw`` reads strictly after)."""
    ms, seq = parse_stream_id(entry_id)
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{2**64 - 1}"
