"""Sequenced dead letters in the warehouse: order lines the database rejected for a while
are written by ``dlq retry`` although the partition checkpoint moved past them."""

from __future__ import annotations

import asyncpg

from app.settings import Settings
from events.store import EventStore
from tests.integration.test_rebuild_support import settings_fixture  # noqa: F401
from tests.support.dlq import Sink, parked_sequences_are_redriven_and_land
from workers.views import ViewPointers, pg_schema


async def test_rejected_order_lines_land_after_retry_and_verify_passes(
    settings: Settings, store: EventStore
) -> None:
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    schema = pg_schema("warehouse", await pointers.current("warehouse"))

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
            f'CREATE FUNCTION "{schema}".reject_line() RETURNS trigger LANGUAGE plpgsql AS $$'
            f" BEGIN RAISE EXCEPTION 'lines of product {product_id} are refused'; END $$;"
            f' CREATE TRIGGER reject_line BEFORE INSERT ON "{schema}".fact_order_line'
            f" FOR EACH ROW WHEN (NEW.product_id = '{product_id}')"
            f' EXECUTE FUNCTION "{schema}".reject_line()'
        )

    async def accept() -> None:
        await sql(
            f'DROP TRIGGER reject_line ON "{schema}".fact_order_line;'
            f' DROP FUNCTION "{schema}".reject_line()'
        )

    async def landed(orders: list[str]) -> set[str]:
        rows = await sql(
            f'SELECT DISTINCT order_id FROM "{schema}".fact_order_line'
            " WHERE order_id = ANY($1::text[])",
            orders,
        )
        return {r["order_id"] for r in rows}

    await parked_sequences_are_redriven_and_land(
        settings, store, "warehouse", Sink(reject, accept, landed)
    )
