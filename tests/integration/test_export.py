"""``streamshop export``: the lake holds every entry of the log once, DuckDB over it adds up
to the warehouse, a run with nothing new writes nothing, and a run killed with SIGKILL leaves
a lake that is consistent and that the next run completes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pyarrow.parquet as pq
import pytest

from app.commands import execute
from app.commands.catalog import CreateProduct
from app.settings import RedisSettings, Settings
from events.store import EventStore
from tests.integration.test_rebuild_support import (  # noqa: F401
    CATEGORIES,
    META,
    Shop,
    append_v1_order,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from workers.export import MANIFEST, ExportOptions, Lake, export, verify_lake
from workers.views import ViewPointers, pg_schema

ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": settings.redis.url,
        "STREAM_PREFIX": settings.redis.prefix,
        "STREAM_PARTITIONS": str(settings.redis.partitions),
        "MONGO_URL": settings.mongo.url,
        "MONGO_DB": settings.mongo.database,
        "DATABASE_URL": settings.postgres.url,
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }


async def log_entries(store: EventStore) -> dict[str, str]:
    """Entry id (with partition) → type field, for every entry of the log (XRANGE)."""
    entries: dict[str, str] = {}
    for p in range(store.keys.partitions):
        for eid, fields in await store.redis.xrange(store.keys.log(p)):
            entries[f"{p}/{eid.decode()}"] = fields.get(b"type", b"").decode()
    return entries


def lake_entries(lake: Path) -> list[tuple[str, str]]:
    """(partition/entry id, dataset) of every row of every Parquet file under log/."""
    rows = duckdb.sql(
        f"SELECT partition || '/' || entry_id, split_part(filename, '/', -3) AS dataset"
        f" FROM read_parquet('{lake}/log/*/*/*.parquet', union_by_name=true, filename=true)"
    ).fetchall()
    return [(key, dataset) for key, dataset in rows]


def listing(lake: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(lake)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in lake.rglob("*")
        if path.is_file()
    }


async def warehouse_schema(settings: Settings, store: EventStore) -> str:
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    return pg_schema("warehouse", await pointers.current("warehouse"))


async def fetch(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def manifest_of(lake: Path) -> dict[str, Any]:
    return json.loads((lake / MANIFEST).read_text())


async def filled_and_projected(settings: Settings, store: EventStore, commands: int) -> Shop:
    shop = Shop(store)
    await shop.seed(accounts=8, products=8)
    await shop.run(commands)
    await append_v1_order(store, shop.accounts[0], shop.products[0])
    await execute(
        store,
        CreateProduct(
            sku=f"ODD-{uuid.uuid4().hex[:6]}", name='Pão "doce",\nfresco', price=1, stock=1
        ),
        META,
    )
    async with live_projector(settings, ["warehouse"]) as runner:
        await eventually(lambda: caught_up(store, runner), within=60, what="the warehouse")
    return shop


async def test_the_lake_holds_every_entry_of_the_log_once_and_adds_up_to_the_warehouse(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    await filled_and_projected(settings, store, 250)
    lake = tmp_path / "lake"

    report = await export(settings, ExportOptions(to=str(lake), batch=100), quiet=True)

    log = await log_entries(store)
    exported = lake_entries(lake)
    assert report.events == len(log)
    assert len(exported) == len(log)  # no entry twice
    assert dict(exported) == log  # every entry, in the dataset of its type
    assert verify_lake(Lake(str(lake))) == []
    counts = dict(
        duckdb.sql(
            f"SELECT type, count(*) FROM read_parquet('{lake}/log/*/*/*.parquet',"
            " union_by_name=true) GROUP BY type"
        ).fetchall()
    )
    assert counts == dict(Counter(log.values()))

    schema = await warehouse_schema(settings, store)
    snapshot = f"{lake}/{manifest_of(lake)['warehouse']['path']}"
    facts = f"read_parquet('{snapshot}/fact_order_line/*/*.parquet', hive_partitioning=true)"
    per_day_sql = await fetch(
        settings,
        f"SELECT to_char(billed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), sum(revenue)::bigint"
        f' FROM "{schema}".fact_order_line GROUP BY 1 ORDER BY 1',
    )
    assert per_day_sql and sum(r for _, r in per_day_sql) > 0
    per_day_facts = duckdb.sql(
        f"SELECT CAST(date AS VARCHAR), sum(revenue)::BIGINT FROM {facts} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    per_day_log = duckdb.sql(
        f"SELECT CAST(date AS VARCHAR), sum(total)::BIGINT FROM read_parquet("
        f"'{lake}/log/OrderBilled/*/*.parquet', hive_partitioning=true) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert per_day_facts == per_day_sql
    assert per_day_log == per_day_sql

    top_sql = await fetch(
        settings,
        f"SELECT product_id, sum(quantity)::bigint, sum(revenue)::bigint"
        f' FROM "{schema}".fact_order_line GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 5',
    )
    top_facts = duckdb.sql(
        f"SELECT product_id, sum(quantity)::BIGINT, sum(revenue)::BIGINT FROM {facts}"
        " GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 5"
    ).fetchall()
    assert top_facts == top_sql
    by_quantity_sql = await fetch(
        settings,
        f'SELECT product_id, sum(quantity)::bigint FROM "{schema}".fact_order_line'
        " GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    by_quantity_log = duckdb.sql(
        "SELECT line.product_id, sum(line.quantity)::BIGINT FROM ("
        ' SELECT unnest(from_json(data, \'{"lines": [{"product_id": "VARCHAR",'
        ' "quantity": "BIGINT"}]}\').lines) AS line'
        f" FROM read_parquet('{lake}/log/OrderBilled/*/*.parquet')) GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    assert by_quantity_log == by_quantity_sql

    for table, key in (("dim_product", "product_id, version"), ("dim_account", "account_id")):
        in_sql = await fetch(settings, f'SELECT * FROM "{schema}".{table} ORDER BY {key}')
        in_lake = duckdb.sql(
            f"SELECT * FROM read_parquet('{snapshot}/{table}/*.parquet') ORDER BY {key}"
        ).fetchall()
        assert in_lake == in_sql, table


async def test_the_lake_keeps_no_password_hash(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=1)
    lake = tmp_path / "lake"

    await export(settings, ExportOptions(to=str(lake), warehouse=False), quiet=True)

    accounts = pq.read_table(lake / "log" / "AccountCreated")
    assert accounts.num_rows == 3
    assert "password_hash" not in accounts.column_names
    assert "email" in accounts.column_names
    for data in accounts.column("data").to_pylist():
        assert "password_hash" not in json.loads(data)
    assert b"argon2id" not in b"".join(p.read_bytes() for p in lake.rglob("*.parquet"))


async def test_a_second_export_with_nothing_new_writes_nothing_and_a_third_adds_only_the_new(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    shop = await filled_and_projected(settings, store, 120)
    lake = tmp_path / "lake"
    first = await export(settings, ExportOptions(to=str(lake), batch=50), quiet=True)
    assert first.files > 0 and first.warehouse_snapshot is not None
    before = listing(lake)

    second = await export(settings, ExportOptions(to=str(lake), batch=50), quiet=True)

    assert (second.events, second.files, second.warehouse_snapshot) == (0, 0, None)
    assert listing(lake) == before

    await shop.run(40)
    async with live_projector(settings, ["warehouse"]) as runner:
        await eventually(lambda: caught_up(store, runner), within=60, what="the warehouse")
    third = await export(settings, ExportOptions(to=str(lake), batch=50), quiet=True)

    log = await log_entries(store)
    assert third.events == len(log) - first.events > 0
    exported = lake_entries(lake)
    assert len(exported) == len(log) and dict(exported) == log
    assert all(listing(lake)[path] == seen for path, seen in before.items() if "log/" in path)
    manifest = manifest_of(lake)
    assert manifest["warehouse"]["snapshot"] == third.warehouse_snapshot
    assert manifest["warehouse"]["previous"] == first.warehouse_snapshot
    assert verify_lake(Lake(str(lake))) == []
    schema = await warehouse_schema(settings, store)
    [(lines,)] = await fetch(settings, f'SELECT count(*) FROM "{schema}".fact_order_line')
    snapshot = f"{lake}/{manifest['warehouse']['path']}"
    [(exported_lines,)] = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{snapshot}/fact_order_line/*/*.parquet')"
    ).fetchall()
    assert exported_lines == lines


async def test_since_skips_older_entries_and_an_undecodable_entry_is_kept_raw(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=2, products=2)
    await store.redis.xadd(store.keys.log(1), {"type": "Nonsense", "data": "{"})
    lake = tmp_path / "lake"
    tomorrow = datetime.now(UTC) + timedelta(days=1)

    skipped = await export(
        settings, ExportOptions(to=str(lake), since=tomorrow, warehouse=False), quiet=True
    )
    assert (skipped.events, skipped.files) == (0, 0)
    assert not list(lake.rglob("*.parquet"))

    report = await export(settings, ExportOptions(to=str(lake), warehouse=False), quiet=True)

    log = await log_entries(store)
    assert report.events == len(log) and report.malformed == 1
    exported = lake_entries(lake)
    assert len(exported) == len(log)
    assert Counter(dataset for _, dataset in exported)["_malformed"] == 1
    [(error,)] = duckdb.sql(
        f"SELECT error FROM read_parquet('{lake}/log/_malformed/*/*.parquet')"
    ).fetchall()
    assert "missing field" in error


async def test_a_killed_export_leaves_a_consistent_lake_that_the_next_run_completes(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=10, products=10)
    await shop.run(500)
    log = await log_entries(store)
    lake = tmp_path / "lake"
    command = [sys.executable, "-m", "workers.cli", "export", "--to", str(lake), "--batch", "2"]
    proc = await asyncio.create_subprocess_exec(
        *command,
        "--no-progress",
        cwd=ROOT,
        env=cli_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def under_way() -> bool:
            try:
                covered = manifest_of(lake)["log"]["partitions"]
            except (FileNotFoundError, json.JSONDecodeError):
                return False
            return sum(p["rows"] for p in covered.values()) > 40

        await eventually(under_way, within=60, what="the export to be under way")
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    half = Lake(str(lake))
    assert verify_lake(half, unlisted_ok=True) == []
    for path in lake.rglob("*.parquet"):  # every visible file is whole
        assert pq.ParquetFile(path).metadata.num_rows > 0
    covered = sum(p["rows"] for p in manifest_of(lake)["log"]["partitions"].values())
    assert 40 < covered < len(log)
    partial = lake_entries(lake)
    assert len(partial) == len(set(partial))  # nothing twice, even before the next run

    again = await asyncio.to_thread(
        subprocess.run,  # another batch size: files of the killed run would not be overwritten
        [*command[:-1], "100"],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr

    assert verify_lake(Lake(str(lake))) == []
    exported = lake_entries(lake)
    assert len(exported) == len(log) and dict(exported) == log
    assert not [p for p in lake.rglob("*") if ".tmp-" in p.name]
    check = await asyncio.to_thread(
        subprocess.run,
        [*command[:6], "--verify"],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (check.returncode, check.stdout.splitlines()[-1]) == (0, f"{lake}: consistent")


async def test_files_a_run_wrote_but_never_committed_are_removed_and_exported_once(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """The window SIGKILL only sometimes hits: files moved into place, manifest not yet
    written. Restoring the manifest of the run before puts the lake exactly there."""
    shop = await filled_and_projected(settings, store, 60)
    lake = tmp_path / "lake"
    await export(settings, ExportOptions(to=str(lake), batch=7), quiet=True)
    committed = (lake / MANIFEST).read_bytes()
    await shop.run(60)
    async with live_projector(settings, ["warehouse"]) as runner:
        await eventually(lambda: caught_up(store, runner), within=60, what="the warehouse")
    uncommitted = await export(settings, ExportOptions(to=str(lake), batch=7), quiet=True)
    assert uncommitted.files > 0 and uncommitted.warehouse_snapshot is not None
    (lake / MANIFEST).write_bytes(committed)
    assert verify_lake(Lake(str(lake)), unlisted_ok=True) == []
    assert verify_lake(Lake(str(lake))) != []

    report = await export(settings, ExportOptions(to=str(lake), batch=11), quiet=True)

    assert report.removed > 0
    assert not (lake / "warehouse" / uncommitted.run).exists()
    assert verify_lake(Lake(str(lake))) == []
    log = await log_entries(store)
    exported = lake_entries(lake)
    assert len(exported) == len(log) and dict(exported) == log


async def test_a_file_url_is_a_lake_like_a_directory(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    await Shop(store).seed(accounts=2, products=2)

    report = await export(
        settings, ExportOptions(to=f"file://{tmp_path}/lake", warehouse=False), quiet=True
    )

    seeded = 2 + 2 + len(CATEGORIES)  # accounts, products, the categories they name
    assert report.events == seeded
    assert len(lake_entries(tmp_path / "lake")) == seeded
    assert verify_lake(Lake(f"file://{tmp_path}/lake")) == []


async def test_a_lake_of_another_log_is_refused(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    await Shop(store).seed(accounts=1, products=1)
    lake = str(tmp_path / "lake")
    await export(settings, ExportOptions(to=lake, warehouse=False), quiet=True)
    other = Settings(
        redis=RedisSettings(url=settings.redis.url, prefix=f"{settings.redis.prefix}:other"),
        mongo=settings.mongo,
        postgres=settings.postgres,
    )

    with pytest.raises(ValueError, match="holds the log"):
        await export(other, ExportOptions(to=lake, warehouse=False), quiet=True)
