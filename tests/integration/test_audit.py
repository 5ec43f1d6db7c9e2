"""The audit projection against the real PostgreSQL: one row per event, append-only, chained."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.settings import Settings
from events.store import EventStore
from projections.audit import AuditProjection, verify_chains
from tests.integration.test_read_models import by_partition, log_of, shop
from workers.commands import audit as audit_command


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


def new_schema() -> str:
    return f"audit_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def audit(pool: asyncpg.Pool) -> AuditProjection:
    projection = AuditProjection(pool, schema=new_schema())
    await projection.setup()
    await projection.setup()  # idempotent
    return projection


async def fill(store: EventStore, audit: AuditProjection) -> int:
    await shop(store)
    events = await log_of(store)
    for partition, batch in by_partition(events).items():
        await audit.apply(partition, batch)
    return len(events)


async def test_one_row_per_event_with_no_secret(
    store: EventStore, audit: AuditProjection, pool: asyncpg.Pool
) -> None:
    count = await fill(store, audit)
    rows = await pool.fetch(f"SELECT * FROM {audit.schema}.events")
    assert len(rows) == count
    assert len({r["event_id"] for r in rows}) == count
    assert {r["type"] for r in rows} >= {"AccountCreated", "LoginFailed", "OrderBilled"}
    everything = str([dict(r) for r in rows])
    assert "password_hash" not in everything and "$argon2id$secret" not in everything
    created = next(r for r in rows if r["type"] == "AccountCreated")
    assert '"email": "ana@example.com"' in created["payload"]
    assert created["recorded_at"] >= created["occurred_at"]


async def test_replayed_batches_add_no_rows_and_keep_the_chain(
    store: EventStore, audit: AuditProjection, pool: asyncpg.Pool
) -> None:
    await fill(store, audit)
    before = await pool.fetch(f"SELECT event_id, hash FROM {audit.schema}.events ORDER BY 1")
    events = await log_of(store)
    for partition, batch in by_partition(events).items():
        await audit.apply(partition, batch)
        await audit.apply(partition, batch[-1:])
        assert await audit.checkpoint(partition) == batch[-1].entry_id
    after = await pool.fetch(f"SELECT event_id, hash FROM {audit.schema}.events ORDER BY 1")
    assert before == after
    assert (await audit.verify()).ok


async def test_a_rebuild_produces_the_same_chain(
    store: EventStore, audit: AuditProjection, pool: asyncpg.Pool
) -> None:
    await fill(store, audit)
    rebuilt = AuditProjection(pool, schema=new_schema())
    await rebuilt.setup()
    for event in await log_of(store):  # one event per batch this time
        await rebuilt.apply(event.partition, [event])
    query = "SELECT partition, n, event_id, prev_hash, hash FROM {}.events ORDER BY 1, 2"
    assert await pool.fetch(query.format(audit.schema)) == await pool.fetch(
        query.format(rebuilt.schema)
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {s}.events SET actor = 'mallory'",
        "DELETE FROM {s}.events",
        "TRUNCATE {s}.events",
    ],
)
async def test_the_database_refuses_to_change_rows(
    store: EventStore, audit: AuditProjection, pool: asyncpg.Pool, statement: str
) -> None:
    await fill(store, audit)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute(statement.format(s=audit.schema))


async def tamper(pool: asyncpg.Pool, schema: str) -> asyncpg.Record:
    """Change one row as a superuser would, with the trigger switched off."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"ALTER TABLE {schema}.events DISABLE TRIGGER events_append_only")
        row = await conn.fetchrow(
            f"UPDATE {schema}.events SET payload = payload || '{{\"total\": 1}}' "
            "WHERE type = 'OrderBilled' RETURNING partition, n, entry_id, event_id"
        )
        await conn.execute(f"ALTER TABLE {schema}.events ENABLE TRIGGER events_append_only")
    return row


async def test_verify_names_the_row_altered_by_hand(
    store: EventStore, audit: AuditProjection, pool: asyncpg.Pool
) -> None:
    await fill(store, audit)
    assert (await verify_chains(pool, audit.schema)).ok
    row = await tamper(pool, audit.schema)
    report = await verify_chains(pool, audit.schema)
    assert not report.ok
    [broken] = report.breaks
    assert (broken.partition, broken.n, broken.event_id) == (
        row["partition"],
        row["n"],
        row["event_id"],
    )
    assert "hash does not match" in broken.reason


async def test_verify_notices_a_deleted_row(
    store: EventStore, audit: AuditProjection, pool: asyncpg.Pool
) -> None:
    await fill(store, audit)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"ALTER TABLE {audit.schema}.events DISABLE TRIGGER USER")
        await conn.execute(f"DELETE FROM {audit.schema}.events WHERE type = 'OrderBilled'")
        await conn.execute(f"ALTER TABLE {audit.schema}.events ENABLE TRIGGER USER")
    report = await verify_chains(pool, audit.schema)
    assert not report.ok


async def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``streamshop audit …`` in-process (the e2e test runs the real process once)."""
    parser = argparse.ArgumentParser()
    audit_command.add_arguments(parser)
    code = await audit_command.run(parser.parse_args(args), Settings())
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_audit_verify_command_exits_nonzero_naming_the_row(
    store: EventStore,
    audit: AuditProjection,
    pool: asyncpg.Pool,
    pg_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await fill(store, audit)
    code, out = await run_cli("verify", "--dsn", pg_dsn, "--schema", audit.schema, capsys=capsys)
    assert code == 0, out
    assert "OK" in out
    row = await tamper(pool, audit.schema)
    code, out = await run_cli("verify", "--dsn", pg_dsn, "--schema", audit.schema, capsys=capsys)
    assert code == 1
    assert f"partition {row['partition']} row n={row['n']}" in out
    assert row["event_id"] in out
