"""Views know their log (invariant 9): two logs sharing one MongoDB and one PostgreSQL
database, as two ``make run`` data directories (or ``make clean`` then ``make run``) do.

The first log builds the views on the base names; the second log then meets them. Its
projector, ``verify`` and the API must refuse them, naming both logs' identities; a
rebuild gives the second log views of its own without touching the first's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient
from pymongo import AsyncMongoClient

from app.main import create_app
from app.settings import MongoSettings, PostgresSettings, RedisSettings, Settings
from events.keys import Keys
from events.store import Append, EventStore
from events.types import LoginFailed
from tests.conftest import REDIS_URL
from tests.e2e import TEST_AUTH
from tests.e2e.test_views_support import pg_database_fixture  # noqa: F401
from tests.integration.test_rebuild_interrupted import ROOT, cli_env
from tests.integration.test_rebuild_support import Shop, caught_up, eventually, live_projector
from workers.views import ViewPointers, pg_schema

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Log:
    """One log (a Redis prefix) and the settings that point it at the shared view stores."""

    settings: Settings
    store: EventStore

    @property
    def prefix(self) -> str:
        return self.settings.redis.prefix

    async def identity(self) -> str | None:
        raw = await self.store.redis.get(f"{self.prefix}:log:identity")
        return None if raw is None else raw.decode()


@pytest.fixture
async def logs(
    redis_client: aioredis.Redis, mongo_url: str, mongo_db_name: str, pg_database: str
) -> AsyncIterator[tuple[Log, Log]]:
    """Two fresh logs on one MongoDB database and one PostgreSQL database."""
    made: list[Log] = []
    for _ in range(2):
        prefix = f"sstest:ident:{uuid.uuid4().hex[:10]}"
        settings = Settings(
            redis=RedisSettings(url=REDIS_URL, prefix=prefix, partitions=4),
            mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
            postgres=PostgresSettings(url=pg_database),
            auth=TEST_AUTH,
            log_format="json",
        )
        store = EventStore(redis_client, Keys(prefix=prefix, partitions=4))
        await store.load_functions()
        made.append(Log(settings, store))
    try:
        yield made[0], made[1]
    finally:
        for log in made:
            keys = [k async for k in redis_client.scan_iter(match=f"{log.prefix}:*", count=1000)]
            if keys:
                await redis_client.delete(*keys)
        client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
        await client.drop_database(mongo_db_name)
        await client.close()


def cli(log: Log, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=cli_env(log.settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def build_first(first: Log) -> None:
    """Some shop activity on the first log, projected into the base views."""
    shop = Shop(first.store)
    await shop.seed(accounts=3, products=3)
    await shop.run(30)
    async with live_projector(first.settings) as runner:
        await eventually(lambda: caught_up(first.store, runner), what="the first log's views")


async def fact_rows(log: Log, schema: str = "dw") -> int:
    conn = await asyncpg.connect(log.settings.postgres.url)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".fact_order_line'))
    finally:
        await conn.close()


async def test_a_log_gets_its_identity_with_its_first_entry_and_keeps_it(
    redis_client: aioredis.Redis, prefix: str, store: EventStore
) -> None:
    fresh = EventStore(redis_client, Keys(prefix=f"{prefix}:fresh", partitions=4))
    assert await redis_client.get(f"{prefix}:fresh:log:identity") is None
    await fresh.append(Append(events=[LoginFailed(email_digest="d", reason="unknown_email")]))
    raw = await redis_client.get(f"{prefix}:fresh:log:identity")
    assert raw is not None and UUID.match(raw.decode()), raw
    again = EventStore(redis_client, Keys(prefix=f"{prefix}:fresh", partitions=4))
    await again.load_functions()
    await again.append(Append(events=[LoginFailed(email_digest="d", reason="unknown_email")]))
    assert await redis_client.get(f"{prefix}:fresh:log:identity") == raw, "created only once"
    await redis_client.delete(*[k async for k in redis_client.scan_iter(match=f"{prefix}:fresh:*")])


async def test_every_view_records_the_log_it_was_built_from(logs: tuple[Log, Log]) -> None:
    first, _ = logs
    await build_first(first)
    identity = await first.identity()
    assert identity is not None
    conn = await asyncpg.connect(first.settings.postgres.url)
    try:
        for schema in ("audit", "dw"):
            value = await conn.fetchval(f"SELECT value FROM {schema}.meta WHERE key = 'log'")
            assert value == identity, schema
    finally:
        await conn.close()
    client: AsyncMongoClient[Any] = AsyncMongoClient(first.settings.mongo.url)
    try:
        doc = await client[first.settings.mongo.database]["meta"].find_one({"_id": "log"})
    finally:
        await client.close()
    assert doc is not None and doc["log"] == identity


async def test_the_second_logs_projector_refuses_the_first_logs_views(
    logs: tuple[Log, Log],
) -> None:
    first, second = logs
    await build_first(first)
    rows = await fact_rows(first)
    await Shop(second.store).seed(accounts=2, products=2)

    try:
        result = await asyncio.to_thread(cli, second, "project", "--block-ms", "100", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the second log's projector ran on the first log's views")
    assert result.returncode == 2, result.stderr[-2000:]
    ours, theirs = await second.identity(), await first.identity()
    assert ours and theirs and ours != theirs
    assert f"was built from log {theirs} but this log is {ours}" in result.stderr
    assert "streamshop rebuild" in result.stderr
    assert await fact_rows(first) == rows, "nothing of the second log reached the first's view"


async def test_verify_refuses_a_view_built_from_another_log(logs: tuple[Log, Log]) -> None:
    first, second = logs
    await build_first(first)
    await Shop(second.store).seed(accounts=2, products=2)

    result = await asyncio.to_thread(cli, second, "verify", "warehouse")
    assert result.returncode == 4, result.stdout + result.stderr[-2000:]
    ours, theirs = await second.identity(), await first.identity()
    assert f"was built from log {theirs} but this log is {ours}" in result.stderr

    check = await asyncio.to_thread(cli, second, "verify", "all", "--identity")
    assert check.returncode == 4, check.stdout + check.stderr[-2000:]
    for view in ("read_models", "audit", "warehouse"):
        assert f"{view}: refused: {view} view" in check.stdout, check.stdout


async def test_the_api_refuses_to_serve_a_view_of_another_log(logs: tuple[Log, Log]) -> None:
    first, second = logs
    await build_first(first)
    ours, theirs = await second.identity(), await first.identity()

    async with AsyncTestClient(app=create_app(second.settings)) as api:
        ready = await api.get("/ready")
        products = await api.get("/products")
    assert ready.status_code == 503, ready.text
    assert theirs in ready.text and ours in ready.text, ready.text
    assert products.status_code == 503, products.text
    assert f"but this log is {ours}" in products.text, products.text

    async with AsyncTestClient(app=create_app(first.settings)) as api:
        assert (await api.get("/ready")).status_code == 200
        assert (await api.get("/products")).status_code == 200


async def test_rebuild_gives_the_second_log_its_own_views_and_keeps_the_firsts(
    logs: tuple[Log, Log],
) -> None:
    first, second = logs
    await build_first(first)
    rows = await fact_rows(first)
    shop = Shop(second.store)
    await shop.seed(accounts=3, products=3)
    await shop.run(20)

    rebuilt = await asyncio.to_thread(cli, second, "rebuild", "all", "--no-progress")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr[-2000:]
    async with live_projector(second.settings) as runner:
        await shop.run(10)
        await eventually(lambda: caught_up(second.store, runner), what="the second log's views")
    verified = await asyncio.to_thread(cli, second, "verify", "all")
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    async with AsyncTestClient(app=create_app(second.settings)) as api:
        assert (await api.get("/ready")).status_code == 200

    # A second rebuild drops the version the first one replaced: that is the first log's
    # base view, which must be kept.
    again = await asyncio.to_thread(cli, second, "rebuild", "warehouse", "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    assert await fact_rows(first) == rows
    still = await asyncio.to_thread(cli, first, "verify", "warehouse")
    assert still.returncode == 0, still.stdout + still.stderr[-2000:]


async def test_a_view_older_than_identities_is_adopted_by_its_own_log_only(
    logs: tuple[Log, Log],
) -> None:
    first, second = logs
    await build_first(first)
    conn = await asyncpg.connect(first.settings.postgres.url)
    try:
        await conn.execute("DROP TABLE dw.meta")  # as built before views recorded their log
    finally:
        await conn.close()

    refused = await asyncio.to_thread(
        cli, second, "project", "warehouse", "--block-ms", "100", timeout=60
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "records no log" in refused.stderr and str(await second.identity()) in refused.stderr

    async with live_projector(dataclasses.replace(first.settings), ["warehouse"]):
        pass
    # A view with no meta counts as built by version 1: a projector of a newer warehouse
    # version rebuilds it for its own log and switches, so look where the pointer is now.
    live = await ViewPointers(first.store.redis, first.prefix).current("warehouse")
    schema = pg_schema("warehouse", live)
    conn = await asyncpg.connect(first.settings.postgres.url)
    try:
        assert await conn.fetchval(f"SELECT value FROM {schema}.meta WHERE key = 'log'") == (
            await first.identity()
        )
    finally:
        await conn.close()
