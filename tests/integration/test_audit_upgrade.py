"""An audit log written before the hash covered the stored bytes (hash format 1) keeps
verifying after the upgrade, and new rows (format 2) continue its chains."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from events.store import EventStore
from projections.audit import GENESIS, AuditProjection, canonical_v1, redact, verify_chains
from tests.integration.test_read_models import by_partition, log_of, shop

FORMAT_1_TABLES = """
CREATE SCHEMA {s};
CREATE TABLE {s}.events (
    partition integer NOT NULL, n bigint NOT NULL, entry_id text NOT NULL,
    event_id text NOT NULL UNIQUE, type text NOT NULL, schema_version integer NOT NULL,
    aggregate text NOT NULL, seq bigint NOT NULL, actor text NOT NULL, source text NOT NULL,
    correlation text NOT NULL, causation text NOT NULL, occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(), payload jsonb NOT NULL,
    prev_hash text NOT NULL, hash text NOT NULL, PRIMARY KEY (partition, n)
);
CREATE TABLE {s}.checkpoints (
    partition integer PRIMARY KEY, entry_id text NOT NULL, n bigint NOT NULL, hash text NOT NULL
);
"""
"""The tables as the format-1 release created them."""


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def write_format_1(pool: asyncpg.Pool, schema: str, events: list[Any]) -> None:
    """Rows as the format-1 projection wrote them: the decoded event hashed."""
    await pool.execute(FORMAT_1_TABLES.format(s=schema))
    for partition, batch in by_partition(events).items():
        prev = GENESIS
        for n, rec in enumerate(batch, start=1):
            row = {
                "partition": partition,
                "n": n,
                "entry_id": rec.entry_id,
                "event_id": rec.id,
                "type": rec.type,
                "schema_version": rec.schema,
                "aggregate": rec.aggregate,
                "seq": rec.seq,
                "actor": rec.actor,
                "source": rec.source,
                "correlation": rec.correlation,
                "causation": rec.causation,
                "occurred_at": rec.at,
                "payload": redact(msgspec.to_builtins(rec.event)),
            }
            row["prev_hash"] = prev
            row["hash"] = prev = hashlib.sha256(prev.encode() + canonical_v1(row)).hexdigest()
            row["payload"] = msgspec.json.encode(row["payload"]).decode()
            await pool.execute(
                f"INSERT INTO {schema}.events ({', '.join(row)}) VALUES "
                f"({', '.join(f'${i}' for i in range(1, len(row) + 1))})",
                *row.values(),
            )
        await pool.execute(
            f"INSERT INTO {schema}.checkpoints VALUES ($1, $2, $3, $4)",
            partition,
            batch[-1].entry_id,
            len(batch),
            prev,
        )


async def test_a_format_1_audit_log_verifies_after_the_upgrade_and_grows_in_format_2(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    schema = f"audit_{uuid.uuid4().hex[:10]}"
    await shop(store)
    old = await log_of(store)
    await write_format_1(pool, schema, old)

    audit = AuditProjection(pool, schema)
    await audit.setup()
    assert (await verify_chains(pool, schema)).ok
    await shop(store)
    for partition, batch in by_partition(await log_of(store)).items():
        await audit.apply(partition, batch)

    report = await verify_chains(pool, schema)
    assert report.ok, report.breaks
    assert report.rows == len(await log_of(store)) > len(old)
    formats = await pool.fetch(f"SELECT hash_format, count(*) FROM {schema}.events GROUP BY 1")
    assert {r["hash_format"]: r["count"] for r in formats} == {
        1: len(old),
        2: report.rows - len(old),
    }

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"ALTER TABLE {schema}.events DISABLE TRIGGER events_append_only")
        tampered = await conn.fetchrow(
            f"UPDATE {schema}.events SET payload = payload || '{{\"total\": 1}}' "
            "WHERE hash_format = 1 AND type = 'OrderBilled' RETURNING partition, n"
        )
        await conn.execute(f"ALTER TABLE {schema}.events ENABLE TRIGGER events_append_only")
    [broken] = (await verify_chains(pool, schema)).breaks
    assert (broken.partition, broken.n) == (tampered["partition"], tampered["n"])
    assert "hash does not match" in broken.reason
