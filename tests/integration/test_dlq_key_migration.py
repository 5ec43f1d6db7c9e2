"""Dead-letter and metrics keys written before they carried hash tags (issue #19) move to
their tagged names, on one node, before a move to a Redis Cluster."""

from __future__ import annotations

import redis.asyncio as aioredis

from events.store import EventStore
from workers.dlq import DeadLetters, metrics_key, migrate_key_names


async def test_untagged_dead_letter_and_metrics_keys_move_to_their_tagged_names(
    redis_client: aioredis.Redis, store: EventStore
) -> None:
    """Keys written before the hash tags (one node) are renamed, once, at a worker's start."""
    prefix = store.keys.prefix
    await redis_client.xadd(f"{prefix}:dlq:view_a", {"dlq.error": "boom"})
    await redis_client.hset(f"{prefix}:dlq:view_a:parked:count", "product:1", 1)
    await redis_client.hset(f"{prefix}:metrics:view_a", "parked", 1)
    await redis_client.xadd(f"{prefix}:dlq:ingest:produtos", {"dlq.error": "not JSON"})
    await redis_client.hset(f"{prefix}:metrics:ingest:produtos", "dead_letters", 1)

    assert await migrate_key_names(redis_client, store.keys) == 5
    assert await migrate_key_names(redis_client, store.keys) == 0

    dead = DeadLetters(redis_client, store.keys)
    assert await dead.projections() == ["view_a"]
    assert await dead.count("view_a") == 1
    assert await redis_client.hget(f"{store.keys.dlq('view_a')}:parked:count", "product:1") == b"1"
    assert await redis_client.hget(metrics_key(store.keys, "view_a"), "parked") == b"1"
    assert await redis_client.xlen(store.keys.ingest_dlq("produtos")) == 1
    assert await redis_client.hget(store.keys.ingest_metrics("produtos"), "dead_letters") == b"1"
