"""Shared fixtures: real Redis, PostgreSQL and an in-memory SecantusDB, isolated per run.

Each test session uses its own Redis key prefix and its own PostgreSQL database and
MongoDB database names, so concurrent runs on one machine never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from events.keys import Keys
from events.store import EventStore

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test."""
    return f"sstest:{RUN_ID}:{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_client: aioredis.Redis, prefix: str) -> AsyncIterator[EventStore]:
    store = EventStore(redis_client, Keys(prefix=prefix, partitions=4))
    await store.load_functions()
    yield store
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await redis_client.delete(*keys)
