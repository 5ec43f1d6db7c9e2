"""A rebuild is all or nothing: an entry that fails, or a lost rebuild lock, aborts it before
the switch (exit 1, the live view untouched, the entry named); ``--park-failures`` switches
with the failures parked as sequenced dead letters. Through the real CLI in a subprocess."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
from pymongo import AsyncMongoClient

from app.commands import execute
from app.commands.billing import BillLine, BillOrder, receipt_of
from app.commands.catalog import UpdateProduct
from app.settings import Settings
from events.codec import encode
from events.ids import now_at, uuid7
from events.store import EventStore
from tests.integration.test_rebuild_interrupted import audit_rows, cli_env, schema_exists
from tests.integration.test_rebuild_support import (  # noqa: F401
    META,
    Shop,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from tests.support.cluster import single_and_cluster
from workers.dlq import DeadLetters
from workers.rebuild import Progress, RebuildOptions, rebuild_view
from workers.views import ViewPointers, mongo_collections, pg_schema

pytestmark = single_and_cluster

ROOT = Path(__file__).resolve().parents[2]

REJECTED_NAME = "Café\x00moído"
"""PostgreSQL text cannot hold NUL: the warehouse rejects this name (MongoDB takes it)."""


async def rebuild_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.cli", "rebuild", *args, "--no-progress"],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=180,
    )


def quiet_progress() -> Progress:
    return Progress("read_models", enabled=False)


def aborted_version(stderr: str) -> str:
    """The new version an aborted rebuild names as dropped."""
    match = re.search(r"the new version (v\w+) was dropped", stderr)
    assert match, stderr[-3000:]
    return match.group(1)


async def groups(store: EventStore, name: str) -> dict[int, tuple[Any, ...]]:
    """The live consumer group of ``name`` per partition: position, entries read, pending."""
    found: dict[int, tuple[Any, ...]] = {}
    for p in range(store.keys.partitions):
        for g in await store.redis.xinfo_groups(store.keys.log(p)):
            if g["name"] == name.encode():
                found[p] = (g["last-delivered-id"], g["entries-read"], g["pending"])
    return found


async def warehouse_rows(dsn: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        tables: dict[str, list[tuple[Any, ...]]] = {}
        for table in ("dim_product", "fact_order_line", "checkpoints"):
            rows = await conn.fetch(f'SELECT * FROM "{schema}".{table} ORDER BY 1, 2')
            tables[table] = [tuple(r) for r in rows]
        return tables
    finally:
        await conn.close()


async def view_state(
    settings: Settings, store: EventStore, name: str
) -> tuple[str, str | None, set[str], dict[int, tuple[Any, ...]]]:
    """Pointer, previous version, registered versions and consumer group of view ``name``."""
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    return (
        await pointers.current(name),
        await pointers.previous(name),
        await pointers.registered(name),
        await groups(store, name),
    )


async def test_an_entry_the_sink_rejects_aborts_the_rebuild_and_names_the_entry(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=3)
    await shop.run(40)
    async with live_projector(settings, ["warehouse"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live warehouse")
    product = shop.products[0]
    bad = await execute(store, UpdateProduct(product_id=product, name=REJECTED_NAME), META)
    ((partition, entry_id),) = bad.entry_ids
    await execute(store, UpdateProduct(product_id=shop.products[1], price=777_77), META)
    before = await view_state(settings, store, "warehouse")
    live_rows = await warehouse_rows(settings.postgres.url, pg_schema("warehouse", before[0]))

    done = await rebuild_cli(settings, "warehouse", "--batch", "10")

    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    named = [
        line for line in done.stderr.splitlines() if line.startswith(f"  failed  entry {entry_id} ")
    ]
    assert named, done.stderr[-3000:]
    assert f"partition {partition}" in named[0]
    assert "ProductUpdated" in named[0]
    assert f"product:{product}" in named[0]
    assert "CharacterNotInRepertoireError" in named[0]
    assert "now on version" not in done.stdout
    assert await view_state(settings, store, "warehouse") == before
    assert await warehouse_rows(settings.postgres.url, pg_schema("warehouse", before[0])) == (
        live_rows
    )
    shadow = aborted_version(done.stderr)
    assert not await schema_exists(settings.postgres.url, pg_schema("warehouse", shadow))
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    assert await store.redis.get(pointers.key("warehouse", ":pause")) is None
    assert await DeadLetters(store.redis, store.keys).list("warehouse") == []


async def test_an_undecodable_entry_aborts_a_read_models_rebuild(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=3)
    await shop.run(30)
    async with live_projector(settings, ["read_models"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live read models")
    aggregate = f"order:{uuid7()}"
    partition = store.keys.partition_of(aggregate)
    entry_id = (
        await store.redis.xadd(
            store.keys.log(partition),
            {
                "id": uuid7(),
                "type": "OrderBilled",
                "schema": "2",
                "aggregate": aggregate,
                "seq": "1",
                "at": now_at(),
                "actor": "legacy",
                "correlation": uuid7(),
                "causation": "",
                "source": "ingest:legacy",
                "data": encode({"type": "OrderBilled", "order_id": "cut off"})[:-9],
            },
        )
    ).decode()
    await shop.run(10)
    before = await view_state(settings, store, "read_models")

    done = await rebuild_cli(settings, "read_models", "--batch", "25")

    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    named = [
        line for line in done.stderr.splitlines() if line.startswith(f"  failed  entry {entry_id} ")
    ]
    assert named, done.stderr[-3000:]
    assert f"partition {partition}" in named[0]
    assert "OrderBilled" in named[0] and aggregate in named[0]
    assert "MalformedEvent" in named[0]
    assert await view_state(settings, store, "read_models") == before
    shadow = aborted_version(done.stderr)
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    try:
        names = await client[settings.mongo.database].list_collection_names()
    finally:
        await client.close()
    assert mongo_collections(shadow).accounts not in names
    assert not [n for n in names if n.endswith(f"_{shadow}")]


async def max_versions(dsn: str, schema: str, products: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT product_id, max(version) AS v FROM "{schema}".dim_product'
            " WHERE product_id = ANY($1::text[]) GROUP BY product_id",
            products,
        )
        return {r["product_id"]: r["v"] for r in rows}
    finally:
        await conn.close()


async def test_park_failures_switches_with_the_failed_entry_and_its_aggregate_dead_lettered(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=3)
    await shop.run(30)
    async with live_projector(settings, ["warehouse"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live warehouse")
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    live = await pointers.current("warehouse")
    product, other = shop.products[0], shop.products[1]
    versions_before = await max_versions(
        settings.postgres.url, pg_schema("warehouse", live), [product, other]
    )
    head = await execute(store, UpdateProduct(product_id=product, name=REJECTED_NAME), META)
    ((partition, head_id),) = head.entry_ids
    await execute(store, UpdateProduct(product_id=product, price=777_77), META)
    await execute(store, UpdateProduct(product_id=other, price=777_77), META)
    await execute(store, UpdateProduct(product_id=product, name="Café moído"), META)
    order = await execute(
        store,
        BillOrder(account_id=shop.accounts[0], lines=[BillLine(product_id=product, quantity=1)]),
        META,
    )
    behind = [
        eid.decode()
        for eid, fields in await store.redis.xrange(store.keys.log(partition), min=f"({head_id}")
        if fields[b"aggregate"] == f"product:{product}".encode()
    ]
    assert len(behind) >= 2

    done = await rebuild_cli(settings, "warehouse", "--batch", "10", "--park-failures")

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rebuilt = await pointers.current("warehouse")
    assert rebuilt != live
    letters = await DeadLetters(store.redis, store.keys).list("warehouse")
    assert [(d.partition, d.entry_id) for d in letters] == [
        (partition, eid) for eid in (head_id, *behind)
    ]
    assert "CharacterNotInRepertoireError" in letters[0].error
    assert [d.error for d in letters[1:]] == [f"parked behind {head_id}"] * len(behind)
    printed = [line.split() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert [(words[0], words[2] if words[0] == "dead" else words[1]) for words in printed] == [
        ("dead", head_id),
        *(("parked", eid) for eid in behind),
    ]
    # The parked changes opened no product version; the other product's change did, and the
    # order billed after the failure (another aggregate) landed.
    schema = pg_schema("warehouse", rebuilt)
    versions = await max_versions(settings.postgres.url, schema, [product, other])
    assert versions[product] == versions_before[product]
    assert versions[other] == versions_before[other] + 1
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        billed = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}".fact_order_line WHERE order_id = $1',
            receipt_of(order).order_id,
        )
    finally:
        await conn.close()
    assert billed == 1


async def test_a_rebuild_that_loses_its_lock_aborts_and_leaves_the_live_view_untouched(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=10, products=10)
    await shop.run(400)
    async with live_projector(settings, ["audit"]) as runner:
        await eventually(lambda: caught_up(store, runner), within=60, what="the live audit")
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    dsn = settings.postgres.url
    before = await view_state(settings, store, "audit")
    live_rows = await audit_rows(dsn, pg_schema("audit", before[0]))
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "workers.cli", "rebuild", "audit", "--batch", "1", "--no-progress"),
            cwd=ROOT,
            env=cli_env(settings),
            stdout=stdout,
            stderr=stderr,
        )
    try:
        building: list[str] = []

        async def under_way() -> bool:
            building[:] = sorted(await pointers.registered("audit"))
            if not building:
                return False
            return len(await audit_rows(dsn, pg_schema("audit", building[0]))) > 20

        await eventually(under_way, within=60, what="the rebuild to be under way")
        thief = "elsewhere:1:took-the-expired-lock"
        await store.redis.set(pointers.key("audit", ":rebuild"), thief, px=120_000)
        code = await asyncio.wait_for(proc.wait(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    shadow = building[0]
    stderr_text = err.read_text()
    assert code == 1, out.read_text() + stderr_text[-3000:]
    assert "rebuild aborted" in stderr_text and "lock" in stderr_text and "lost" in stderr_text
    assert "now on version" not in out.read_text()
    assert await view_state(settings, store, "audit") == before
    assert await audit_rows(dsn, pg_schema("audit", before[0])) == live_rows
    assert not await schema_exists(dsn, pg_schema("audit", shadow))
    assert (await store.redis.get(pointers.key("audit", ":rebuild"))).decode() == thief
    assert await store.redis.get(pointers.key("audit", ":pause")) is None


async def test_an_undecodable_entry_parks_the_later_entries_of_its_aggregate(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=2, products=2)
    async with live_projector(settings, ["read_models"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live read models")
    product, other = shop.products
    aggregate = f"product:{product}"
    partition = store.keys.partition_of(aggregate)
    head_id = (
        await store.redis.xadd(
            store.keys.log(partition),
            {
                "id": uuid7(),
                "type": "ProductUpdated",
                "schema": "1",
                "aggregate": aggregate,
                "seq": "2",
                "at": now_at(),
                "actor": "legacy",
                "correlation": uuid7(),
                "causation": "",
                "source": "ingest:legacy",
                "data": b'{"type": "ProductUpdated", "product_id": ',
            },
        )
    ).decode()
    behind = []
    for change in (
        UpdateProduct(product_id=product, price=123_45),
        UpdateProduct(product_id=product, name="Pão de queijo"),
    ):
        ((_, eid),) = (await execute(store, change, META)).entry_ids
        behind.append(eid)
        await execute(store, UpdateProduct(product_id=other, price=543_21), META)

    report = await rebuild_view(
        settings, "read_models", RebuildOptions(batch=3, park_failures=True), quiet_progress()
    )

    assert [(f.entry_id, f.behind) for f in report.parked] == [
        (head_id, None),
        *((eid, head_id) for eid in behind),
    ]
    assert "MalformedEvent" in report.parked[0].error
    letters = await DeadLetters(store.redis, store.keys).list("read_models")
    assert [(d.entry_id, d.error) for d in letters][1:] == [
        (eid, f"parked behind {head_id}") for eid in behind
    ]
    assert letters[0].entry_id == head_id and "MalformedEvent" in letters[0].error
    assert report.dead_letters == [d.dlq_id for d in letters]
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    try:
        products = client[settings.mongo.database][mongo_collections(report.version).products]
        parked = await products.find_one({"_id": product})
        went_on = await products.find_one({"_id": other})
    finally:
        await client.close()
    assert parked is not None and parked["price"] != 123_45 and parked["name"] != "Pão de queijo"
    assert went_on is not None and went_on["price"] == 543_21
