"""A schema change (a new upcaster) and ``streamshop rebuild audit``: the audit chain, which
hashes the entries as stored, comes out identical row for row and ``audit verify`` passes."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from app.settings import Settings
from events import upcasting
from events.store import EventStore
from events.types import OrderBilled
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    append_v1_order,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from workers.commands import audit as audit_command
from workers.commands import rebuild as rebuild_command
from workers.views import ViewPointers, pg_schema


@pytest.fixture
def schema_3_orders(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``OrderBilled`` moves to schema 3 at test time, through the real upcaster registry:
    a made-up migration that changes what every reader decodes from every stored order
    (line names upper-cased) and gives the lines a new defaulted field."""
    monkeypatch.setattr(OrderBilled, "SCHEMA", 3)

    @upcasting.upcaster("OrderBilled", 2)
    def order_billed_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        lines = [dict(line, name=line["name"].upper(), gift=False) for line in data["lines"]]
        return {**data, "lines": lines}

    try:
        yield
    finally:
        del upcasting.UPCASTERS[("OrderBilled", 2)]


async def chain(settings: Settings, schema: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        rows = await conn.fetch(
            f'SELECT partition, n, entry_id, event_id, prev_hash, hash FROM "{schema}".events'
            " ORDER BY partition, n"
        )
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def cli(module: Any, settings: Settings, *args: str) -> int:
    """``streamshop <command> …`` in-process, so that it sees the test's upcaster."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return int(await module.run(parser.parse_args(args), settings))


async def test_a_new_upcaster_leaves_the_rebuilt_audit_chain_identical(
    settings: Settings, store: EventStore, capsys: pytest.CaptureFixture[str], request: Any
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=3)
    await shop.run(60)
    await append_v1_order(store, shop.accounts[0], shop.products[0])
    async with live_projector(settings, ["audit"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live audit")
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    live = pg_schema("audit", await pointers.current("audit"))
    before = await chain(settings, live)
    assert len(before) == await store.count()

    request.getfixturevalue("schema_3_orders")
    orders = [e async for e in store.read_all() if e.type == "OrderBilled"]
    assert orders and all(e.schema == 3 for e in orders)
    assert all(line.name.isupper() for e in orders for line in e.event.lines)  # type: ignore[union-attr]

    assert await cli(rebuild_command, settings, "audit", "--batch", "50", "--no-progress") == 0
    rebuilt = pg_schema("audit", await pointers.current("audit"))
    assert rebuilt != live
    after = await chain(settings, rebuilt)
    assert after == before
    capsys.readouterr()
    for schema in (rebuilt, live):
        code = await cli(audit_command, settings, "verify", "--schema", schema)
        out = capsys.readouterr()
        assert code == 0, out.out + out.err
        assert f"audit log OK: {len(before)} rows" in out.out
