"""Shared set-up for the rebuild and verify tests (no tests here): settings on the test's
Redis prefix, MongoDB database and PostgreSQL database, a shop under load through the real
command handlers, the live ProjectorRunner in-process, and view inspection through the
pointers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from pymongo import AsyncMongoClient

from app.commands import execute
from app.commands.accounts import SignUp
from app.commands.billing import BillLine, BillOrder
from app.commands.catalog import AdjustStock, CreateProduct, UpdateProduct
from app.commands.categories import CreateCategory
from app.commands.errors import CategoryAlreadyExists, DomainError
from app.settings import MongoSettings, PostgresSettings, RedisSettings, Settings
from events.codec import encode
from events.ids import now_at, uuid7
from events.keys import digest
from events.store import Append, EventStore, Metadata
from events.types import LoginFailed, LoginSucceeded
from tests.conftest import RedisTarget
from workers.registry import open_projections
from workers.runner import ProjectorRunner
from workers.views import BASE, VIEWS, ViewPointers, drop_version, mongo_collections, pg_schema

META = Metadata(actor="test", source="api")


@pytest.fixture(name="settings")
async def settings_fixture(
    prefix: str,
    store: EventStore,
    redis_target: RedisTarget,
    mongo_url: str,
    mongo_db_name: str,
    pg_dsn: str,
) -> AsyncIterator[Settings]:
    """The test's settings. The PostgreSQL views start on a version of their own (the
    database is shared by the run); read models on the base names (the database is ours).
    Every version left at the end is dropped."""
    settings = Settings(
        redis=RedisSettings(
            url=redis_target.url,
            cluster=redis_target.cluster,
            prefix=prefix,
            partitions=store.keys.partitions,
        ),
        mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
        postgres=PostgresSettings(url=pg_dsn),
        log_format="json",
    )
    pointers = ViewPointers(store.redis, prefix)
    for name in ("audit", "warehouse"):
        await pointers.set(name, f"t{uuid.uuid4().hex[:12]}")
    yield settings
    for name in VIEWS:
        versions = {await pointers.current(name), *(await pointers.registered(name))}
        if (previous := await pointers.previous(name)) is not None:
            versions.add(previous)
        for version in versions:
            if name == "read_models" or version != BASE:
                await drop_version(settings, name, version)
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    await client.drop_database(mongo_db_name)
    await client.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


# -- the live projector ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def live_projector(
    settings: Settings, names: Sequence[str] = VIEWS
) -> AsyncIterator[ProjectorRunner]:
    """The real runner over registered views (wrapped to follow their pointers)."""
    redis = settings.redis.connect()
    try:
        async with open_projections(settings, list(names)) as projections:
            runner = ProjectorRunner(
                redis,
                settings.redis.keys,
                projections,
                consumer=f"live-{uuid.uuid4().hex[:6]}",
                batch=200,
                block_ms=100,
                lease_ms=3000,
                backoff_base_ms=50,
                backoff_max_ms=200,
            )
            task = asyncio.create_task(runner.run())
            try:
                yield runner
            finally:
                runner.stop()
                await asyncio.wait_for(task, 30)
    finally:
        await redis.aclose()


async def caught_up(store: EventStore, runner: ProjectorRunner) -> bool:
    """Every live view has applied every entry now in the log."""
    heads = await store.heads()
    for projection in runner.projections:
        for p, head in heads.items():
            if head is not None and await projection.checkpoint(p) != head:
                return False
    return True


# -- a shop under load -----------------------------------------------------------------------

CATEGORIES = ["cafe", "pao", "doce"]


@dataclass
class Shop:
    """Drives the real command handlers (and appends logins directly)."""

    store: EventStore
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    accounts: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    commands: int = 0

    async def sign_up(self) -> None:
        result = await execute(
            self.store,
            SignUp(
                email=f"u{uuid.uuid4().hex[:10]}@example.com",
                name="Ana",
                password_hash="$argon2id$not-a-real-hash",
            ),
            META,
        )
        self.accounts.append(json.loads(result.result)["account_id"])

    async def create_product(self) -> None:
        category = self.rng.choice(CATEGORIES)
        result = await execute(
            self.store,
            CreateProduct(
                sku=f"SKU-{uuid.uuid4().hex[:8]}",
                name=f"Produto {len(self.products)}",
                category=category,
                price=self.rng.randint(100, 5000),
                stock=1000,
            ),
            META,
        )
        self.products.append(json.loads(result.result)["product_id"])

    async def seed(self, accounts: int = 10, products: int = 10) -> None:
        for slug in CATEGORIES:
            with contextlib.suppress(CategoryAlreadyExists):
                await execute(self.store, CreateCategory(slug=slug, name=slug.title()), META)
        for _ in range(accounts):
            await self.sign_up()
        for _ in range(products):
            await self.create_product()

    async def step(self) -> None:
        """One random command, weighted like a shop: mostly orders."""
        roll = self.rng.random()
        try:
            if roll < 0.5:
                lines = [
                    BillLine(product_id=pid, quantity=self.rng.randint(1, 3))
                    for pid in self.rng.sample(self.products, self.rng.randint(1, 3))
                ]
                await execute(
                    self.store,
                    BillOrder(account_id=self.rng.choice(self.accounts), lines=lines),
                    META,
                )
            elif roll < 0.6:
                await execute(
                    self.store,
                    AdjustStock(product_id=self.rng.choice(self.products), delta=50, reason="in"),
                    META,
                )
            elif roll < 0.7:
                await execute(
                    self.store,
                    UpdateProduct(
                        product_id=self.rng.choice(self.products),
                        price=self.rng.randint(100, 5000),
                    ),
                    META,
                )
            elif roll < 0.85:
                account = self.rng.choice(self.accounts)
                await self.store.append(
                    Append(
                        events=[LoginSucceeded(account_id=account, email_digest=digest(account))]
                    )
                )
            elif roll < 0.9:
                await self.store.append(
                    Append(events=[LoginFailed(email_digest=digest("x"), reason="unknown_email")])
                )
            elif roll < 0.95:
                await self.sign_up()
            else:
                await self.create_product()
        except DomainError:
            pass
        self.commands += 1

    async def run(self, count: int) -> None:
        for _ in range(count):
            await self.step()

    async def run_until(self, stop: asyncio.Event, pause: float = 0.002) -> None:
        while not stop.is_set():
            await self.step()
            await asyncio.sleep(pause)


async def append_v1_order(store: EventStore, account_id: str, product_id: str) -> str:
    """A schema-1 ``OrderBilled`` written raw, as an old producer did (``price``, no
    ``line_total``); returns the order id."""
    order_id = uuid7()
    aggregate = f"order:{order_id}"
    data = {
        "type": "OrderBilled",
        "order_id": order_id,
        "account_id": account_id,
        "lines": [{"product_id": product_id, "name": "Café antigo", "quantity": 3, "price": 700}],
        "total": 2100,
        "currency": "BRL",
    }
    await store.redis.xadd(
        store.keys.log(store.keys.partition_of(aggregate)),
        {
            "id": uuid7(),
            "type": "OrderBilled",
            "schema": "1",
            "aggregate": aggregate,
            "seq": "1",
            "at": now_at(),
            "actor": "legacy",
            "correlation": uuid7(),
            "causation": "",
            "source": "ingest:legacy",
            "data": encode(data),
        },
    )
    return order_id


# -- looking at the views through the pointers -----------------------------------------------


async def view_size(settings: Settings, pointers: ViewPointers, name: str) -> int:
    """Rows of the live version of ``name`` (readers resolve it the same way)."""
    version = await pointers.current(name)
    if name == "read_models":
        client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
        try:
            db = client[settings.mongo.database]
            names = mongo_collections(version)
            total = 0
            for collection in (names.accounts, names.products, names.orders):
                total += await db[collection].count_documents({})
            return total
        finally:
            await client.close()
    table = "events" if name == "audit" else "fact_order_line"
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        return int(
            await conn.fetchval(f'SELECT count(*) FROM "{pg_schema(name, version)}".{table}')
        )
    finally:
        await conn.close()


async def mongo_docs(settings: Settings, collection: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    try:
        db = client[settings.mongo.database]
        return await db[collection].find({}).sort("_id", 1).to_list(None)
    finally:
        await client.close()
