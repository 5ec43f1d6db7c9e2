"""A log holding entries of both forms (full, as written before the compact form, and
compact): every reader sees the same envelope, the audit chain verifies across both, and a
rebuild of every view over the mixed log verifies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from typing import Any

import asyncpg
import msgspec

from app.settings import Settings
from events.codec import COMPACT_FIELDS, FIELDS, RecordedEvent, full_fields, short_keys
from events.ids import at_ms, parse_at, uuid7
from events.store import Append, EventStore, Metadata
from events.types import OrderBilled, OrderLine
from projections.audit import row_of, verify_chains
from tests.integration.test_rebuild_interrupted import ROOT, cli_env
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    append_v1_order,
    settings_fixture,
)
from workers.views import ViewPointers, pg_schema

ENVELOPE = ("id", "type", "schema", "aggregate", "at", "actor", "correlation", "causation")


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def envelope(rec: RecordedEvent) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in (*ENVELOPE, "source", "event")}


async def forms(store: EventStore) -> Counter[str]:
    seen: Counter[str] = Counter()
    for p in range(store.keys.partitions):
        for _, fields in await store.read_raw(p, count=100_000):
            names = tuple(k.decode() for k in fields)
            form = "compact" if names == COMPACT_FIELDS else "full" if names == FIELDS else "?"
            if form == "compact" and short_keys(fields[b"type"].decode(), fields[b"data"]):
                form = "short"
            seen[form] += 1
    return seen


async def test_the_same_event_reads_the_same_from_a_full_and_a_compact_entry(
    store: EventStore,
) -> None:
    full = EventStore(store.redis, store.keys, store.personal, compact=False)
    at = "2026-11-23T20:00:00.123Z"
    line = OrderLine(
        product_id=uuid7(), name="Pão de queijo", quantity=2, unit_price=5, line_total=10
    )
    order = OrderBilled(order_id=uuid7(), account_id=uuid7(), lines=[line], total=10)
    meta = Metadata(actor="account:" + order.account_id, source="api")
    # the same id (carrying the millisecond of ``at``), once in each form
    event_id = uuid7(at_ms(parse_at(at)))
    first = EventStore(store.redis, store.keys, store.personal, short=False)
    await full.append(Append(events=[order], meta=meta, at=at, event_ids=[event_id]))
    await first.append(Append(events=[order], meta=meta, at=at, event_ids=[event_id]))
    await store.append(Append(events=[order], meta=meta, at=at, event_ids=[event_id]))
    [old, mid, new] = await store.read_partition(store.keys.partition_of(order.aggregate()))

    assert [k.decode() for k in old.fields or {}] == list(FIELDS)
    assert [k.decode() for k in mid.fields or {}] == list(COMPACT_FIELDS)
    assert [k.decode() for k in new.fields or {}] == list(COMPACT_FIELDS)
    assert (mid.fields or {})[b"data"].startswith(b'{"account_id":')
    assert (new.fields or {})[b"data"].startswith(b'{"a":')  # short data
    assert envelope(old) == envelope(mid) == envelope(new)
    assert new.at == parse_at(at) and new.correlation == event_id
    assert (old.seq, mid.seq, new.seq) == (1, 2, 3)
    old_row = row_of(old, 1, "0" * 64)
    for rec in (mid, new):
        # readers that show the stored fields (the feed, the lake) see the full form
        as_full = full_fields(rec.fields)  # type: ignore[arg-type]
        assert {k: v for k, v in as_full.items() if k != b"seq"} == {
            k: v
            for k, v in old.fields.items()  # type: ignore[union-attr]
            if k != b"seq"
        }
        # the audit: the same columns and payload, each row hashing its own stored fields
        new_row = row_of(rec, 2, "0" * 64)
        same = ("event_id", "type", "schema_version", "aggregate", "actor", "source")
        for column in (*same, "correlation", "causation", "occurred_at", "payload"):
            assert old_row[column] == new_row[column], column
        assert b"2:at," in old_row["stored"] and b"2:at," not in new_row["stored"]


async def test_an_ingested_id_that_does_not_carry_at_gets_a_full_entry(store: EventStore) -> None:
    line = OrderLine(product_id="p", name="x", quantity=1, unit_price=5, line_total=5)
    order = OrderBilled(order_id=uuid7(), account_id="a", lines=[line], total=5)
    other_ms = at_ms(parse_at("2026-11-23T20:00:00.000Z")) - 1
    for ids, at in (
        (["c8a1e7a4-6f1f-4d43-9a55-0d8d2b4c7a10"], "2026-11-23T20:00:00.000Z"),  # a UUIDv4
        ([uuid7(other_ms)], "2026-11-23T20:00:00.000Z"),  # another millisecond
        (None, "2026-11-23T21:00:00.000+01:00"),  # an ``at`` the id would not give back
    ):
        await store.append(Append(events=[order], at=at, event_ids=ids))
    rows = await store.read_raw(store.keys.partition_of(order.aggregate()))
    assert [[k.decode() for k in fields] for _, fields in rows] == [list(FIELDS)] * 3
    decoded = await store.read_partition(store.keys.partition_of(order.aggregate()))
    assert [r.at for r in decoded] == [parse_at("2026-11-23T20:00:00.000Z")] * 3


async def test_a_mixed_log_rebuilds_every_view_and_the_audit_verifies(
    settings: Settings, store: EventStore
) -> None:
    full = EventStore(store.redis, store.keys, store.personal, compact=False)
    before = Shop(full)
    await before.seed(accounts=3, products=3)
    await before.run(25)
    await append_v1_order(full, before.accounts[0], before.products[0])
    first = EventStore(store.redis, store.keys, store.personal, short=False)
    middle = Shop(first, accounts=before.accounts, products=before.products)
    await middle.run(15)
    after = Shop(store, accounts=before.accounts, products=before.products)
    await after.run(25)
    await after.sign_up()
    await after.create_product()
    seen = await forms(store)
    assert seen["full"] > 10 and seen["compact"] > 10 and not seen["?"], seen
    assert seen["short"] > 5, seen  # OrderBilled of the last part

    # every entry decodes, and to the envelope of its full form
    async for rec in store.read_all():
        assert rec.fields is not None
        assert rec.at == parse_at(full_fields(rec.fields)[b"at"].decode())  # type: ignore[arg-type]

    rebuilt = await asyncio.to_thread(cli, settings, "rebuild", "all", "--no-progress")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr[-2000:]
    verified = await asyncio.to_thread(cli, settings, "verify", "all")
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    # the decision state too (the shop appends logins without it: rebuild, then verify)
    folded = await asyncio.to_thread(cli, settings, "rebuild", "state", "--no-progress")
    assert folded.returncode == 0, folded.stdout + folded.stderr[-2000:]
    state = await asyncio.to_thread(cli, settings, "verify", "state")
    assert state.returncode == 0, state.stdout + state.stderr[-2000:]

    schema = pg_schema(
        "audit", await ViewPointers(store.redis, settings.redis.prefix).current("audit")
    )
    pool = await asyncpg.create_pool(settings.postgres.url, min_size=1, max_size=2)
    try:
        report = await verify_chains(pool, schema)
        assert report.ok, report.breaks
        assert report.rows == sum(seen.values()) and report.undecodable == 0
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                f'SELECT stored, payload, correlation, event_id FROM "{schema}".events'
            )
    finally:
        await pool.close()
    compact_rows = [r for r in rows if b"2:at," not in bytes(r["stored"])]
    assert len(compact_rows) == seen["compact"] + seen["short"]
    for row in compact_rows:  # the columns show the full envelope, the payload its type
        assert row["correlation"]
        assert msgspec.json.decode(row["payload"])["type"]


async def functions(store: EventStore) -> set[str]:
    names = set()
    for library in await store.redis.function_list():
        fields = dict(zip(library[::2], library[1::2], strict=True))
        for function in fields[b"functions"]:
            names.add(dict(zip(function[::2], function[1::2], strict=True))[b"name"].decode())
    return names


async def test_a_process_of_the_release_before_shares_the_redis(store: EventStore) -> None:
    """It loads its library (``streamshop_v2``, append.lua unchanged) again when it starts and
    appends with ``streamshop_append_v2``: our append keeps working without a reload, and
    its full entries read back beside ours."""
    from importlib import resources

    line = OrderLine(product_id="p", name="x", quantity=1, unit_price=5, line_total=5)
    old_code = resources.files("events").joinpath("append.lua").read_text()
    await store.redis.function_load(old_code, replace=True)
    assert "streamshop_append_v3" in await functions(store)
    await store.append(
        Append(events=[OrderBilled(order_id="o1", account_id="a", lines=[line], total=5)])
    )

    old = EventStore(store.redis, store.keys, store.personal, compact=False)
    order = OrderBilled(order_id="o2", account_id="a", lines=[line], total=5)
    keys, request, _, _ = old._request(Append(events=[order]))  # the old request's shape
    await store.redis.fcall("streamshop_append_v2", len(keys), *keys, request)
    await store.redis.function_load(old_code, replace=True)
    await store.append(
        Append(events=[OrderBilled(order_id="o3", account_id="a", lines=[line], total=5)])
    )

    decoded = [rec async for rec in store.read_all()]
    assert sorted(r.event.order_id for r in decoded) == ["o1", "o2", "o3"]  # type: ignore[union-attr]
    assert sorted(len(r.fields or {}) for r in decoded) == [10, 10, 11]
