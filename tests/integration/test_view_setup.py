"""Setting up a view beside a live one.

PostgreSQL: the DDL runs once per version of it, and a transaction the server rolls back
because of other transactions is the sink's failure.

Re-running the idempotent DDL is not harmless: ``CREATE INDEX IF NOT EXISTS`` waits for a
SHARE lock on its table and ``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` for an ACCESS
EXCLUSIVE one, even when there is nothing to do, so a projector starting beside a live
writer queued behind it (and could deadlock with it)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from projections.audit import AuditProjection
from projections.read_models import ReadModelsProjection
from projections.read_models.documents import ProductView
from projections.read_models.projection import Collections
from projections.views import run_setup
from projections.warehouse import WarehouseProjection
from workers.runner import is_sink_error


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def drop(pool: asyncpg.Pool, schema: str) -> None:
    await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("view", ["warehouse", "audit"])
async def test_a_second_setup_does_not_wait_for_a_live_writers_transaction(
    pool: asyncpg.Pool, pg_dsn: str, view: str
) -> None:
    schema = f"setup_{uuid.uuid4().hex[:10]}"
    projection = (
        WarehouseProjection(pool, schema=schema)
        if view == "warehouse"
        else AuditProjection(pool, schema=schema)
    )
    await projection.setup()
    table = "fact_order_line" if view == "warehouse" else "events"
    writer = await asyncpg.connect(pg_dsn)
    try:
        # A live projector's open transaction: it holds ROW EXCLUSIVE on a table the DDL
        # indexes (what an INSERT takes), as a batch in flight does.
        tx = writer.transaction()
        await tx.start()
        await writer.execute(f'LOCK TABLE "{schema}".{table} IN ROW EXCLUSIVE MODE')
        # Without the recorded digest this waits for the writer's commit (forever here).
        await asyncio.wait_for(projection.setup(), timeout=20)
        await tx.rollback()
    finally:
        await writer.close()
        await drop(pool, schema)


async def test_changed_ddl_is_applied_and_a_dropped_schema_is_set_up_again(
    pool: asyncpg.Pool,
) -> None:
    schema = f"setup_{uuid.uuid4().hex[:10]}"
    first = (
        f'CREATE SCHEMA IF NOT EXISTS "{schema}"; CREATE TABLE IF NOT EXISTS "{schema}".a (x int);'
    )
    second = first + f' CREATE TABLE IF NOT EXISTS "{schema}".b (y int);'
    try:
        await run_setup(pool, first, schema)
        await run_setup(pool, first, schema)
        assert await pool.fetchval("SELECT to_regclass($1)", f'"{schema}".b') is None
        await run_setup(pool, second, schema)  # a new version of the DDL runs
        assert await pool.fetchval("SELECT to_regclass($1)", f'"{schema}".b') is not None
        await drop(pool, schema)
        await run_setup(pool, second, schema)  # the record went with the schema
        assert await pool.fetchval("SELECT to_regclass($1)", f'"{schema}".a') is not None
    finally:
        await drop(pool, schema)


async def test_a_deadlock_is_the_sinks_failure_not_the_events(pg_dsn: str) -> None:
    """A real deadlock between two transactions: the one PostgreSQL rolls back raises
    ``DeadlockDetectedError``, which the runner must wait out and re-feed, not dead-letter."""
    table = f"public.deadlock_{uuid.uuid4().hex[:10]}"
    a, b = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
    try:
        await a.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)")
        await a.execute(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await a.execute(f"UPDATE {table} SET n = 1 WHERE id = 1")
        await b.execute(f"UPDATE {table} SET n = 1 WHERE id = 2")
        outcomes = await asyncio.gather(
            a.execute(f"UPDATE {table} SET n = 2 WHERE id = 2"),
            b.execute(f"UPDATE {table} SET n = 2 WHERE id = 1"),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1, outcomes
        assert isinstance(failures[0], asyncpg.exceptions.DeadlockDetectedError), failures
        assert is_sink_error(failures[0])
        for tx in (ta, tb):
            await tx.rollback()
    finally:
        await a.execute(f"DROP TABLE IF EXISTS {table}")
        await a.close()
        await b.close()


async def test_read_models_setup_drops_the_indexes_an_earlier_release_created(
    mongo_db: AsyncDatabase,
) -> None:
    """Live collections indexed by an earlier release (products by ``stock`` and ``sku``,
    accounts by ``email``) lose those indexes on the next start and keep the declared ones;
    a second start, say a second projector, changes nothing."""
    collections = Collections.suffixed(f"_retired_{uuid.uuid4().hex[:8]}")
    products = mongo_db[collections.products]
    accounts = mongo_db[collections.accounts]
    await products.create_index("stock", name="by_stock")
    await products.create_index("sku", name="by_sku")
    await accounts.create_index("email", name="email")
    declared = {index.document["name"] for index in ProductView.Settings.indexes}
    assert {"by_stock", "by_sku"} <= set(await products.index_information())
    for _ in range(2):
        await ReadModelsProjection(mongo_db, collections).setup()
        assert set(await products.index_information()) == {"_id_"} | declared
        assert set(await accounts.index_information()) == {"_id_"}
