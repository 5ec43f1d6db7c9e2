"""Shared set-up for the views' end-to-end tests (no tests here): the real app with its read
side, and a real ProjectorRunner running the three registered projections in-process,
each test on its own Redis prefix, MongoDB database and PostgreSQL database. A module
imports ``shop_fixture`` and ``pg_database_fixture`` to use the ``shop`` fixture."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient
from pymongo import AsyncMongoClient

from app.main import create_app
from app.settings import MongoSettings, PostgresSettings, Settings
from events.codec import RecordedEvent
from events.store import EventStore
from tests.conftest import PG_ADMIN_DSN
from tests.e2e import admin, api_settings
from workers.registry import open_projections
from workers.runner import ProjectorRunner

VIEWS = ["read_models", "audit", "warehouse"]


@dataclasses.dataclass
class Shop:
    api: AsyncTestClient[Any]
    settings: Settings
    store: EventStore
    pool: asyncpg.Pool
    """Superuser pool on this test's PostgreSQL database (to inspect and tamper)."""

    async def events(self, event_type: str | None = None) -> list[RecordedEvent]:
        return [e async for e in self.store.read_all() if event_type in (None, e.type)]


async def _admin_sql(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(name="pg_database")
async def pg_database_fixture() -> AsyncIterator[str]:
    """A PostgreSQL database of its own, so the views' default schemas do not collide."""
    name = f"sstest_views_{uuid.uuid4().hex[:10]}"
    await _admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ProjectorThread:
    """The real ProjectorRunner on its own thread and event loop.

    Litestar's test client runs the app on a portal thread and blocks the test's loop while
    a request is in flight, so a projector sharing that loop would stall during a query's
    read-your-writes wait.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runner: ProjectorRunner | None = None
        self.thread = threading.Thread(target=self._thread, name="projector", daemon=True)

    def _thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        redis = self.settings.redis.connect()
        try:
            async with open_projections(self.settings, VIEWS) as projections:
                self.runner = ProjectorRunner(
                    redis,
                    self.settings.redis.keys,
                    projections,
                    consumer=f"e2e-{uuid.uuid4().hex[:6]}",
                    batch=200,
                    block_ms=100,
                    lease_ms=3000,
                )
                self.started.set()
                await self.runner.run()
        finally:
            await redis.aclose()

    def start(self) -> None:
        self.thread.start()
        if not self.started.wait(30) or self.error is not None:
            raise RuntimeError(f"projector did not start: {self.error!r}")

    def stop(self) -> None:
        if self.loop is not None and self.runner is not None:
            self.loop.call_soon_threadsafe(self.runner.stop)
        self.thread.join(30)
        if self.error is not None:
            raise self.error


@pytest.fixture(name="shop")
async def shop_fixture(
    prefix: str, store: EventStore, mongo_url: str, mongo_db_name: str, pg_database: str
) -> AsyncIterator[Shop]:
    """App + projector on real Redis, MongoDB-protocol server and PostgreSQL."""
    settings = dataclasses.replace(
        api_settings(prefix, store),
        mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
        postgres=PostgresSettings(url=pg_database),
    )
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    pool = await asyncpg.create_pool(pg_database, min_size=1, max_size=2)
    projector = ProjectorThread(settings)
    try:
        projector.start()
        async with AsyncTestClient(app=create_app(settings)) as api:
            yield Shop(api=api, settings=settings, store=store, pool=pool)
    finally:
        await asyncio.to_thread(projector.stop)
        await pool.close()
        await mongo.drop_database(mongo_db_name)
        await mongo.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def fresh(resp: httpx.Response) -> httpx.Response:
    """The response came from a view that had applied the asked position."""
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("x-view-position"), resp.headers
    assert "x-view-stale" not in resp.headers, resp.headers
    return resp


async def last_position(shop: Shop) -> str:
    """A position covering every entry now in the log (all partitions' heads)."""
    from events.positions import format_position

    heads = await shop.store.heads()
    return format_position({p: e for p, e in heads.items() if e})


async def admin_headers(shop: Shop) -> dict[str, str]:
    """An admin's auth headers (created through the command path)."""
    return await admin(shop.api, shop.store)
