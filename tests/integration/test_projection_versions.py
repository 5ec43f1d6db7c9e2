"""Projection versions instead of migrations: a projector that starts with a newer version
of the warehouse (a new column) rebuilds the live view into a new schema and switches,
instead of writing new rows to the old schema (``UndefinedColumn``, dead letters)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from app.settings import Settings
from events.store import EventStore
from projections.identity import ViewVersionMismatch
from projections.views import postgres_pool
from projections.warehouse import Batch, WarehouseProjection
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from workers import registry
from workers.dlq import DeadLetters
from workers.verify import verify_view
from workers.views import ViewPointers, pg_schema

LAST_ACCOUNT_COLUMN = "    created_date_key integer NOT NULL\n);"


class WarehouseWithTier(WarehouseProjection):
    """The next version of the warehouse: ``dim_account`` gains a ``tier`` column."""

    version = WarehouseProjection.version + 1

    def schema_sql(self) -> str:
        sql = super().schema_sql()
        assert LAST_ACCOUNT_COLUMN in sql, "dim_account's definition moved: adjust the test"
        return sql.replace(
            LAST_ACCOUNT_COLUMN,
            "    created_date_key integer NOT NULL,\n    tier text NOT NULL DEFAULT 'new'\n);",
        )

    async def _write(self, conn: asyncpg.Connection, batch: Batch) -> None:
        await super()._write(conn, batch)
        if batch.accounts:
            await conn.execute(
                f"UPDATE {self._s}.dim_account SET tier = CASE role WHEN 'admin' THEN 'staff'"
                " ELSE 'customer' END WHERE account_id = ANY($1::text[])",
                [row[0] for row in batch.accounts],
            )


@asynccontextmanager
async def warehouse_with_tier(
    settings: Any, version: str | None = None
) -> AsyncIterator[WarehouseWithTier]:
    async with postgres_pool(settings.postgres.url) as pool:
        yield WarehouseWithTier(pool, f"dw_{version}" if version else "dw")


async def tiers(settings: Settings, schema: str) -> list[str | None]:
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        rows = await conn.fetch(f'SELECT tier FROM "{schema}".dim_account')
    finally:
        await conn.close()
    return [r["tier"] for r in rows]


async def test_a_new_warehouse_column_switches_to_a_rebuilt_version_with_no_dead_letter(
    settings: Settings, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=3)
    await shop.run(40)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    dead = DeadLetters(store.redis, settings.redis.keys)
    async with live_projector(settings, ["warehouse"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the version 1 warehouse")
    old = await pointers.current("warehouse")

    monkeypatch.setitem(registry.PROJECTIONS, "warehouse", warehouse_with_tier)
    async with live_projector(settings, ["warehouse"]) as runner:
        await shop.seed(accounts=2, products=0)  # applied live, after the start
        await shop.run(10)

        async def settled() -> bool:
            return await dead.count("warehouse") > 0 or await caught_up(store, runner)

        await eventually(settled, what="the version 2 warehouse")
    assert await dead.count("warehouse") == 0

    new = await pointers.current("warehouse")
    assert new != old
    assert await pointers.previous("warehouse") == old
    accounts = await tiers(settings, pg_schema("warehouse", new))
    assert len(accounts) == len(shop.accounts)
    assert set(accounts) == {"customer"}

    report = await verify_view(settings, "warehouse", batch=100)
    assert report.ok, report.differences
    assert report.live_version == new


async def test_an_older_projector_refuses_a_warehouse_a_newer_version_built(
    settings: Settings, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=2, products=2)
    with monkeypatch.context() as patch:
        patch.setitem(registry.PROJECTIONS, "warehouse", warehouse_with_tier)
        async with live_projector(settings, ["warehouse"]) as runner:
            await eventually(lambda: caught_up(store, runner), what="the version 2 warehouse")

    code = WarehouseProjection.version
    built = rf"built by version {code + 1} .* this code is version {code}"
    with pytest.raises(ViewVersionMismatch, match=built):
        async with live_projector(settings, ["warehouse"]):
            pass
