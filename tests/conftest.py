"""Shared fixtures: real Redis, PostgreSQL and an in-memory SecantusDB, isolated per run.

Each test session uses its own Redis key prefix and its own PostgreSQL database and
MongoDB database names, so concurrent runs on one machine never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from events.connection import connect
from events.keys import Keys
from events.personal import DEV_DIGEST_SECRET
from events.store import EventStore
from scripts.servers import mongo_server
from tests.support.cluster import RedisClusterNodes, start_cluster

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test."""
    return f"sstest:{RUN_ID}:{uuid.uuid4().hex[:8]}"


def pytest_configure(config: pytest.Config) -> None:
    # The processes tests start (the fault harness, the API server tests) run outside dev
    # mode and inherit this environment: they need an email-digest secret, and the one that
    # the in-process stores use (``Keys``' default), so digests agree on both sides.
    os.environ.setdefault("EMAIL_DIGEST_SECRET", DEV_DIGEST_SECRET.decode())
    config.addinivalue_line(
        "markers",
        "cross_slot(keys): on the Redis Cluster this test's append spans hash slots "
        "(names the keys); skipped there until the saga of issue #19",
    )


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A real three-primary Redis Cluster for the whole run, started on first use."""
    nodes = start_cluster()
    try:
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(nodes.root, ignore_errors=True)


@pytest.fixture
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    """The test Redis: one node, or (parametrised ``"cluster"``, see
    :data:`tests.support.cluster.single_and_cluster`) the cluster client on a real cluster."""
    if getattr(request, "param", "single") == "cluster":
        if marker := request.node.get_closest_marker("cross_slot"):
            pytest.skip(f"spans hash slots on the cluster ({marker.args[0]}): needs the saga, #19")
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        client = connect(nodes.url, cluster=True)
    else:
        client = connect(REDIS_URL, cluster=False)
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


# -- MongoDB wire protocol (SecantusDB, in memory) and PostgreSQL -------------------------


PG_ADMIN_DSN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """An in-memory SecantusDB server for the whole run (or TEST_MONGO_URL if set)."""
    if url := os.environ.get("TEST_MONGO_URL"):
        yield url
        return
    with mongo_server(":memory:") as url:
        yield url


@pytest.fixture
def mongo_db_name() -> str:
    """A MongoDB database name unique to this test."""
    return f"sstest_{RUN_ID}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def mongo_db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[AsyncDatabase]:
    """A MongoDB database unique to this test, dropped after it."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_url)
    yield client[mongo_db_name]
    await client.drop_database(mongo_db_name)
    await client.close()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL database created for this run and dropped after it."""
    name = f"sstest_{RUN_ID}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
