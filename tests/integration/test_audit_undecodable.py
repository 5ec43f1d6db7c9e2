"""An entry that can never be decoded: the audit records it raw (its stored bytes hashed into
the chain, so the chain has no hole) instead of dead-lettering it; the other views still
retry and dead-letter it."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import asyncpg
import pytest
import redis.asyncio as aioredis

from app.settings import Settings
from events.ids import now_at, uuid7
from events.positions import parse_stream_id
from events.store import EventStore
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    eventually,
    settings_fixture,
)
from workers.commands import audit as audit_command
from workers.dlq import DeadLetters
from workers.registry import open_projections
from workers.runner import ProjectorRunner
from workers.verify import verify_view
from workers.views import VIEWS, ViewPointers, pg_schema


async def append_garbled(store: EventStore, aggregate: str) -> list[str]:
    """Two entries no reader can decode, appended straight with XADD as a buggy producer
    would: an unknown type, and one with no envelope to speak of and data that is not JSON
    (not even UTF-8), with an extra field."""
    stream = store.keys.log(store.keys.partition_of(aggregate))
    unknown = {
        "id": uuid7(),
        "type": "StockRecounted",
        "schema": "1",
        "aggregate": aggregate,
        "seq": "999",
        "at": now_at(),
        "actor": "legacy",
        "correlation": "",
        "causation": "",
        "source": "ingest:legacy",
        "data": json.dumps({"type": "StockRecounted", "count": 7}),
    }
    garbage = {"aggregate": aggregate, "data": b"\xff{not json", "x-trace": b"\x00\x01"}
    return [
        (await store.redis.xadd(stream, unknown)).decode(),  # type: ignore[arg-type]
        (await store.redis.xadd(stream, garbage)).decode(),  # type: ignore[arg-type]
    ]


async def audit_verify(settings: Settings, schema: str, capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser()
    audit_command.add_arguments(parser)
    capsys.readouterr()
    code = await audit_command.run(parser.parse_args(["verify", "--schema", schema]), settings)
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    return out.out


async def test_an_undecodable_entry_is_recorded_raw_by_the_audit_and_dead_lettered_elsewhere(
    settings: Settings,
    store: EventStore,
    redis_client: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=3)
    product = shop.products[0]
    garbled = await append_garbled(store, f"product:{product}")
    await shop.run(30)  # later entries, some of them in the same partition
    partition = store.keys.partition_of(f"product:{product}")
    sequence = f"product:{product}"
    # The views other than the audit sequence by aggregate, read from the raw fields (so an
    # undecodable entry has one too): the first garbled entry fails and heads the product's
    # sequence; the second, and every later entry of the product, is parked behind it.
    parked = [
        eid
        for eid, fields in await store.read_raw(partition, count=10_000)
        if fields.get(b"aggregate", b"").decode() == sequence
        and parse_stream_id(eid) > parse_stream_id(garbled[0])
    ]
    assert parked[:1] == garbled[1:]
    dead = DeadLetters(redis_client, store.keys)
    redis = aioredis.Redis.from_url(settings.redis.url)
    try:
        async with open_projections(settings, list(VIEWS)) as projections:
            runner = ProjectorRunner(
                redis,
                settings.redis.keys,
                projections,
                consumer=f"t-{uuid.uuid4().hex[:6]}",
                block_ms=100,
                max_attempts=2,
                retry_base_ms=10,
                backoff_base_ms=50,
                backoff_max_ms=200,
            )
            task = asyncio.create_task(runner.run())
            ends = await store.heads()

            async def settled() -> bool:
                # Every entry delivered and acknowledged (applied, dead-lettered or parked:
                # a view's checkpoint stays before the parked tail of a partition).
                for projection in projections:
                    for p, end in ends.items():
                        if end is None:
                            continue
                        groups = await redis.xinfo_groups(store.keys.log(p))
                        group = next(g for g in groups if g["name"].decode() == projection.name)
                        if group["last-delivered-id"].decode() != end or group["pending"]:
                            return False
                for name in ("read_models", "warehouse"):
                    # One head (the first garbled entry), the rest of its sequence behind it.
                    if len(await dead.list(name)) < 1 + len(parked):
                        return False
                return True

            try:
                await eventually(settled, what="every view past the garbled entries")
            finally:
                runner.stop()
                await asyncio.wait_for(task, 30)
    finally:
        await redis.aclose()

    for name in ("read_models", "warehouse"):
        letters = await dead.list(name)
        head, followers = letters[0], letters[1:]
        # The first garbled entry was retried and dead-lettered as the sequence's head ...
        assert (head.entry_id, head.head, head.sequence) == (garbled[0], "", sequence), name
        assert head.attempts == 2 and "unknown event type" in head.error, name
        # ... and the second, with every later entry of the product, is parked behind it,
        # in log order and unapplied (sequenced DLQ); nothing else is dead-lettered.
        assert [letter.entry_id for letter in followers] == parked, name
        assert {(f.head, f.sequence, f.partition) for f in followers} == {
            (head.dlq_id, sequence, partition)
        }, name
        assert followers[0].fields == {
            b"aggregate": sequence.encode(),
            b"data": b"\xff{not json",
            b"x-trace": b"\x00\x01",
        }, name
    assert await dead.list("audit") == []

    pointers = ViewPointers(store.redis, settings.redis.prefix)
    schema = pg_schema("audit", await pointers.current("audit"))
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        rows = await conn.fetch(
            f'SELECT n, entry_id, event_id, type, undecodable, error, payload FROM "{schema}".events'
            " WHERE partition = $1 ORDER BY n",
            partition,
        )
        total = await conn.fetchval(f'SELECT count(*) FROM "{schema}".events')
    finally:
        await conn.close()
    entries = [eid for eid, _ in await store.read_raw(partition, count=10_000)]
    assert [r["entry_id"] for r in rows] == entries  # every entry, in log order, no hole
    assert [r["n"] for r in rows] == list(range(1, len(entries) + 1))
    assert total == await store.count()
    raw = {r["entry_id"]: r for r in rows if r["undecodable"]}
    assert list(raw) == garbled
    unknown, garbage = raw[garbled[0]], raw[garbled[1]]
    assert unknown["type"] == "StockRecounted" and "unknown event type" in unknown["error"]
    assert json.loads(unknown["payload"]) == {"type": "StockRecounted", "count": 7}
    assert unknown["event_id"] == f"undecodable:{partition}:{garbled[0]}"
    assert garbage["type"] == "" and "missing field" in garbage["error"]

    out = await audit_verify(settings, schema, capsys)
    assert f"audit log OK: {total} rows" in out
    assert f"{len(garbled)} undecodable entries recorded raw" in out
    report = await verify_view(settings, "audit", batch=50)  # a fold of the log records them too
    assert report.ok, report.differences
