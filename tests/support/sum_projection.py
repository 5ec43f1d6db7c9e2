"""A test projection: sums StockAdjusted deltas per aggregate into PostgreSQL.

Every applied event is recorded once (primary key = event id) in ``{table}_applied`` with its
aggregate ``seq`` and an apply-order serial, the sums in ``{table}_sums`` and the partition
checkpoint in ``{table}_checkpoints`` — all in one transaction, so a replayed entry is a
no-op and a test can check per-aggregate order (no gap, no inversion).

Knobs, from the environment because the projection runs in a separate ``streamshop project``
process: ``SUM_TABLE`` (table prefix and projection name), ``SUM_FAIL_REASON`` (apply raises
for a StockAdjusted with that ``reason``: an entry-level failure), ``SUM_DELAY_MS`` (pause
after the commit, before returning: widens the applied-but-not-acknowledged window).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg

from app.settings import Settings
from events.codec import RecordedEvent
from events.types import StockAdjusted


class PoisonEvent(Exception):
    """Raised for the event the test marked as always failing."""


class SumProjection:
    def __init__(
        self, pool: asyncpg.Pool, table: str, fail_reason: str = "", delay_ms: int = 0
    ) -> None:
        self.pool = pool
        self.name = table
        self.table = table
        self.fail_reason = fail_reason
        self.delay_ms = delay_ms

    async def setup(self) -> None:
        t = self.table
        async with self.pool.acquire() as conn, conn.transaction():
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide: serialise starters.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", t)
            await conn.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {t}_applied (
                    event_id text PRIMARY KEY, partition int NOT NULL, entry_id text NOT NULL,
                    aggregate text NOT NULL, seq bigint NOT NULL, amount bigint NOT NULL,
                    n bigserial NOT NULL);
                CREATE TABLE IF NOT EXISTS {t}_sums (aggregate text PRIMARY KEY, total bigint NOT NULL);
                CREATE TABLE IF NOT EXISTS {t}_checkpoints (
                    partition int PRIMARY KEY, entry_id text NOT NULL, ms bigint NOT NULL,
                    sq bigint NOT NULL);
                """
            )

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        for e in events:
            if (
                self.fail_reason
                and isinstance(e.event, StockAdjusted)
                and e.event.reason == self.fail_reason
            ):
                raise PoisonEvent(f"cannot apply {e.id}: reason {self.fail_reason!r} is poison")
        amounts = [e.event.delta if isinstance(e.event, StockAdjusted) else 0 for e in events]
        last = events[-1].entry_id
        ms, sq = (int(x) for x in last.split("-"))
        t = self.table
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"""
                WITH batch AS (
                    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
                                         $5::bigint[]) WITH ORDINALITY
                        AS b(event_id, entry_id, aggregate, seq, amount, ord)),
                new AS (
                    INSERT INTO {t}_applied (event_id, partition, entry_id, aggregate, seq, amount)
                    SELECT event_id, $6, entry_id, aggregate, seq, amount FROM batch ORDER BY ord
                    ON CONFLICT (event_id) DO NOTHING
                    RETURNING aggregate, amount)
                INSERT INTO {t}_sums (aggregate, total)
                SELECT aggregate, sum(amount) FROM new GROUP BY aggregate
                ON CONFLICT (aggregate) DO UPDATE SET total = {t}_sums.total + excluded.total
                """,
                [e.id for e in events],
                [e.entry_id for e in events],
                [e.aggregate for e in events],
                [e.seq for e in events],
                amounts,
                partition,
            )
            await conn.execute(
                f"""
                INSERT INTO {t}_checkpoints AS c (partition, entry_id, ms, sq)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (partition) DO UPDATE
                SET entry_id = excluded.entry_id, ms = excluded.ms, sq = excluded.sq
                WHERE (c.ms, c.sq) < (excluded.ms, excluded.sq)
                """,
                partition,
                last,
                ms,
                sq,
            )
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)

    async def checkpoint(self, partition: int) -> str | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(
                f"SELECT entry_id FROM {self.table}_checkpoints WHERE partition = $1", partition
            )


@asynccontextmanager
async def factory(settings: Settings) -> AsyncIterator[SumProjection]:
    """Registry factory: ``streamshop project tests.support.sum_projection:factory``."""
    pool = await asyncpg.create_pool(
        settings.postgres.url, min_size=0, max_size=4, command_timeout=10
    )
    try:
        yield SumProjection(
            pool,
            table=os.environ.get("SUM_TABLE", "sums"),
            fail_reason=os.environ.get("SUM_FAIL_REASON", ""),
            delay_ms=int(os.environ.get("SUM_DELAY_MS", "0")),
        )
    finally:
        try:
            await asyncio.wait_for(pool.close(), 5)
        except TimeoutError:
            pool.terminate()
