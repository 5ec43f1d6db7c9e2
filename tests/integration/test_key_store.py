"""The dev key store (a Redis hash) against the real Redis: create-or-get, fetch, destroy."""

from __future__ import annotations

import redis.asyncio as aioredis

from events.personal import PersonalData, RedisKeyStore


async def test_a_key_is_created_once_fetched_in_bulk_and_gone_once_destroyed(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    personal = PersonalData(RedisKeyStore(redis_client, prefix))
    try:
        seal = await personal.sealer("a1")
        again = await personal.sealer("a1")
        assert again.key == seal.key  # a retried command seals with the same key
        sealed = seal("email", "ana@example.com")
        opener = await personal.opener(["a1", "a2"])
        assert opener.keys["a2"] is None
        assert opener.open("a1", "email", sealed) == "ana@example.com"

        assert await personal.forget("a1") is True
        assert await personal.forget("a1") is False
        assert (await personal.opener(["a1"])).open("a1", "email", sealed) is None
        assert (await personal.sealer("a1")).key != seal.key  # a new key opens nothing old
    finally:
        await redis_client.delete(f"{prefix}:pii:keys")
