"""Sequenced dead letters in the audit log: rows the database rejected for a while are
appended by ``dlq retry`` in log order, so the chain is the fold of the log."""

from __future__ import annotations

import asyncio

import asyncpg

from app.settings import Settings
from events.store import EventStore
from tests.integration.test_rebuild_support import settings_fixture  # noqa: F401
from tests.support.dlq import Sink, cli, parked_sequences_are_redriven_and_land
from workers.views import ViewPointers, pg_schema


async def test_rejected_audit_rows_are_appended_in_order_after_retry_and_verify_passes(
    settings: Settings, store: EventStore
) -> None:
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    schema = pg_schema("audit", await pointers.current("audit"))

    async def sql(statement: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(settings.postgres.url)
        try:
            if not args:  # DDL, several statements
                await conn.execute(statement)
                return []
            return await conn.fetch(statement, *args)
        finally:
            await conn.close()

    async def reject(product_id: str) -> None:
        await sql(
            f'CREATE FUNCTION "{schema}".reject_row() RETURNS trigger LANGUAGE plpgsql AS $$'
            f" BEGIN RAISE EXCEPTION 'rows about product {product_id} are refused'; END $$;"
            f' CREATE TRIGGER reject_row BEFORE INSERT ON "{schema}".events'
            f" FOR EACH ROW WHEN (NEW.payload::text LIKE '%{product_id}%')"
            f' EXECUTE FUNCTION "{schema}".reject_row()'
        )

    async def accept() -> None:
        await sql(
            f'DROP TRIGGER reject_row ON "{schema}".events; DROP FUNCTION "{schema}".reject_row()'
        )

    async def landed(orders: list[str]) -> set[str]:
        rows = await sql(
            f'SELECT aggregate FROM "{schema}".events WHERE aggregate = ANY($1::text[])',
            [f"order:{order}" for order in orders],
        )
        return {r["aggregate"].removeprefix("order:") for r in rows}

    await parked_sequences_are_redriven_and_land(
        settings, store, "audit", Sink(reject, accept, landed, partition_wide=True)
    )
    chains = await asyncio.to_thread(cli, settings, "audit", "verify", "--schema", schema)
    assert chains.returncode == 0, chains.stdout + chains.stderr[-2000:]
