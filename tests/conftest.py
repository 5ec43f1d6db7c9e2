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
from dataclasses import dataclass

import asyncpg
import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio.cluster import RedisCluster

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
        "cross_slot(keys): the test checks the single node's atomic multi-key append, whose "
        "keys (named) span hash slots on the Redis Cluster; the test reads "
        "`redis_target.cluster` and asserts SlotsDiffer there",
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
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        client = connect(nodes.url, cluster=True)
    else:
        client = connect(REDIS_URL, cluster=False)
    yield client
    await client.aclose()


@dataclass(frozen=True)
class RedisTarget:
    """Where the test's Redis is, for processes the test starts and settings it builds."""

    url: str
    cluster: bool

    def env(self) -> dict[str, str]:
        """``REDIS_URL`` and ``REDIS_CLUSTER`` for a ``streamshop`` subprocess."""
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "1" if self.cluster else "0"}


def target_of(client: aioredis.Redis) -> RedisTarget:
    """Where ``client`` (the test Redis, or the cluster client on the test cluster) points."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        return RedisTarget(f"redis://{node.host}:{node.port}/0", cluster=True)
    return RedisTarget(REDIS_URL, cluster=False)


@pytest.fixture
def redis_target(redis_client: aioredis.Redis) -> RedisTarget:
    """The URL and kind of ``redis_client``'s Redis (one node, or a node of the cluster)."""
    return target_of(redis_client)


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
