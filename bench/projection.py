"""Projection: events/s applied per view ÷ the raw bulk-write rate of the same store, same run.

A demo shop's log (accounts, catalog, orders, all through the command path) is folded into
each view twice, each time into an empty target:

* ``runner``: the real :class:`~workers.runner.ProjectorRunner` with that one projection,
  timed from start until the view's checkpoints reach the log's heads (Redis reads, decode,
  apply, acks: what ``streamshop project`` does);
* ``apply``: ``projection.apply(partition, batch)`` over pre-decoded batches, partitions
  concurrently, as the runner calls it (the view's own cost, without the runtime).

The limit is the store's raw bulk write of equivalent data in the same batches with the same
concurrency: MongoDB ``insert_many`` of one document per event (its envelope and data),
PostgreSQL ``COPY`` of the very rows the view stores (audit rows; warehouse dimension and
fact rows) into tables of the same shape with no triggers, chains or checkpoints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient, InsertOne

from app.passwords import Passwords
from app.settings import AuthSettings
from bench.common import Timer, rate
from bench.servers import Stack, drop_prefix, mongo_server, postgres_database
from events.codec import RecordedEvent
from events.connection import connect
from events.keys import digest
from events.personal import PersonalData, RedisKeyStore
from events.store import EventStore
from events.types import AccountCreated, OrderBilled, ProductCreated
from projections.audit import COLUMNS as AUDIT_COLUMNS
from projections.audit import GENESIS, AuditProjection, row_of
from projections.base import Projection
from projections.read_models import ReadModelsProjection
from projections.views import postgres_pool
from projections.warehouse import (
    LINE_COLUMNS,
    PRODUCT_COLUMNS,
    WarehouseProjection,
    date_key,
    date_row,
    order_line_rows,
)
from workers.commands.demo import populate
from workers.demo import make_shop
from workers.registry import factory_for
from workers.runner import ProjectorRunner

VIEWS = ("read_models", "audit", "warehouse")
ACCOUNT_COLUMNS = ("account_id", "email_digest", "role", "created_at", "created_date_key")
"""The ``dim_account`` columns an ``AccountCreated`` fills (``forgotten`` keeps its default)."""
CHEAP_AUTH = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
"""Password hashing is not what this section measures; the log's events are the same."""

Batches = dict[int, list[list[RecordedEvent]]]


async def read_log(store: EventStore, batch: int) -> Batches:
    """Every partition's events, decoded, cut in the runner's batch size."""
    batches: Batches = {}
    for p in range(store.keys.partitions):
        events = [e async for e in store.iter_partition(p, batch=1000)]
        batches[p] = [events[i : i + batch] for i in range(0, len(events), batch)]
    return batches


async def per_partition(
    batches: Batches, write: Callable[[int, list[RecordedEvent]], Awaitable[None]]
) -> float:
    """Feed each partition's batches in order, partitions concurrently; seconds taken."""

    async def partition(p: int) -> None:
        for chunk in batches[p]:
            await write(p, chunk)

    with Timer() as timer:
        await asyncio.gather(*(partition(p) for p in batches))
    return timer.seconds


async def until_caught_up(
    projection: Projection, heads: dict[int, str | None], within: float = 600.0
) -> None:
    wanted = {p: h for p, h in heads.items() if h is not None}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = await projection.checkpoints()  # type: ignore[attr-defined]
        if all(done.get(p) == h for p, h in wanted.items()):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{projection.name} did not catch up within {within}s")


async def time_runner(
    stack: Stack, redis: aioredis.Redis, view: str, batch: int, heads: dict[int, str | None]
) -> float:
    """The real runtime, one projection, from an empty view to the log's heads."""
    settings = stack.settings()
    async with factory_for(view)(settings) as projection:
        await projection.setup()
        runner = ProjectorRunner(
            redis,
            settings.redis.keys,
            [projection],
            consumer=f"bench-{uuid.uuid4().hex[:6]}",
            batch=batch,
            block_ms=100,
        )
        with Timer() as timer:
            task = asyncio.create_task(runner.run())
            try:
                await until_caught_up(projection, heads)
            finally:
                runner.stop()
        await task
    return timer.seconds


# -- raw bulk writes of equivalent data ------------------------------------------------------


def mongo_doc(rec: RecordedEvent) -> dict[str, Any]:
    return {
        "_id": rec.id,
        "type": rec.type,
        "aggregate": rec.aggregate,
        "seq": rec.seq,
        "at": rec.at,
        "data": msgspec.to_builtins(rec.event),
    }


def audit_rows(batches: Batches) -> dict[int, list[list[tuple[Any, ...]]]]:
    rows: dict[int, list[list[tuple[Any, ...]]]] = {}
    for p, chunks in batches.items():
        n, prev = 0, GENESIS
        rows[p] = []
        for chunk in chunks:
            out = []
            for rec in chunk:
                n += 1
                row = row_of(rec, n, prev)
                prev = row["hash"]
                out.append(tuple(row[c] for c in AUDIT_COLUMNS))
            rows[p].append(out)
    return rows


def warehouse_rows(chunk: Sequence[RecordedEvent]) -> dict[str, list[tuple[Any, ...]]]:
    """The dimension and fact rows the warehouse stores for these events."""
    tables: dict[str, list[tuple[Any, ...]]] = {"dates": [], "accounts": [], "products": []}
    tables["lines"] = []
    days: set[date] = set()
    for rec in chunk:
        match rec.event:
            case AccountCreated() as e:
                days.add(rec.at.date())
                tables["accounts"].append(
                    (e.account_id, digest(e.email), e.role, rec.at, date_key(rec.at))
                )
            case ProductCreated() as e:
                tables["products"].append(
                    (
                        e.product_id,
                        1,
                        e.sku,
                        e.name,
                        e.category,
                        e.price,
                        e.currency,
                        rec.at,
                        None,
                        True,
                        False,
                        rec.seq,
                    )
                )
            case OrderBilled() as e:
                days.add(rec.at.date())
                tables["lines"].extend(order_line_rows(rec, e))
            case _:
                pass
    tables["dates"] = [date_row(d) for d in sorted(days)]
    return tables


async def raw_mongo(db: Any, batches: Batches) -> float:
    collection = db[f"raw_{uuid.uuid4().hex[:6]}"]
    docs = {p: [[mongo_doc(r) for r in chunk] for chunk in chunks] for p, chunks in batches.items()}
    cursor = {p: 0 for p in batches}

    async def write(p: int, _: list[RecordedEvent]) -> None:
        await collection.insert_many(docs[p][cursor[p]], ordered=False)
        cursor[p] += 1

    return await per_partition(batches, write)


async def raw_same_documents(
    mongo: AsyncMongoClient[Any], source: str, target: str, batch: int, writers: int
) -> tuple[float, int]:
    """Bulk-write the read models' final documents (every collection of ``source`` but the
    checkpoints) into fresh collections of ``target`` carrying the same indexes: ``bulk_write``
    of ``InsertOne`` in chunks of ``batch``, ``writers`` chunks at a time (the partitions).
    (seconds, documents): the like-for-like limit of ``read_models_vs_raw``."""
    src, dst = mongo[source], mongo[target]
    docs: list[tuple[str, dict[str, Any]]] = []
    for name in await src.list_collection_names():
        if name.startswith("checkpoints"):
            continue
        for index_name, info in (await src[name].index_information()).items():
            if index_name == "_id_":
                continue
            options = {k: v for k, v in info.items() if k in ("unique", "sparse")}
            await dst[name].create_index(info["key"], name=index_name, **options)
        docs.extend([(name, d) async for d in src[name].find({})])
    chunks = [docs[i : i + batch] for i in range(0, len(docs), batch)]
    queue = iter(chunks)

    async def writer() -> None:
        for chunk in queue:
            by_collection: dict[str, list[InsertOne[Any]]] = {}
            for name, doc in chunk:
                by_collection.setdefault(name, []).append(InsertOne(doc))
            for name, ops in by_collection.items():
                await dst[name].bulk_write(ops, ordered=False)

    with Timer() as timer:
        await asyncio.gather(*(writer() for _ in range(writers)))
    await mongo.drop_database(target)
    return timer.seconds, len(docs)


async def raw_copy_audit(pool: asyncpg.Pool, batches: Batches) -> float:
    table = f"raw_audit_{uuid.uuid4().hex[:6]}"
    await pool.execute(
        f'CREATE TABLE public.{table} (LIKE "audit".events INCLUDING DEFAULTS INCLUDING INDEXES)'
    )
    rows = audit_rows(batches)
    cursor = {p: 0 for p in batches}

    async def write(p: int, _: list[RecordedEvent]) -> None:
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                table, schema_name="public", columns=AUDIT_COLUMNS, records=rows[p][cursor[p]]
            )
        cursor[p] += 1

    return await per_partition(batches, write)


async def raw_copy_warehouse(pool: asyncpg.Pool, batches: Batches) -> float:
    tag = uuid.uuid4().hex[:6]
    names = {
        "dates": ("dim_date", None),
        "accounts": ("dim_account", ACCOUNT_COLUMNS),
        "products": ("dim_product", PRODUCT_COLUMNS),
        "lines": ("fact_order_line", LINE_COLUMNS),
    }
    for source, _ in names.values():
        await pool.execute(
            f'CREATE TABLE public.raw_{source}_{tag} (LIKE "dw".{source} INCLUDING DEFAULTS '
            "INCLUDING INDEXES)"
        )
    rows = {p: [warehouse_rows(chunk) for chunk in chunks] for p, chunks in batches.items()}
    cursor = {p: 0 for p in batches}

    async def write(p: int, _: list[RecordedEvent]) -> None:
        tables = rows[p][cursor[p]]
        async with pool.acquire() as conn, conn.transaction():
            for key, (source, columns) in names.items():
                if not tables[key]:
                    continue
                if key == "dates":  # shared by every batch: the one row that must not repeat
                    await conn.executemany(
                        f"INSERT INTO public.raw_{source}_{tag} VALUES "
                        "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT DO NOTHING",
                        tables[key],
                    )
                    continue
                await conn.copy_records_to_table(
                    f"raw_{source}_{tag}",
                    schema_name="public",
                    columns=columns,
                    records=tables[key],
                )
        cursor[p] += 1

    return await per_partition(batches, write)


# -- the section ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoLog:
    """A demo shop's log under a fresh prefix, with a private MongoDB-protocol server and a
    fresh PostgreSQL database for the views, as the projection and rebuild figures use."""

    stack: Stack
    store: EventStore
    mongo_url: str
    dsn: str
    fill_seconds: float
    description: str


@asynccontextmanager
async def demo_log(
    redis_url: str, accounts: int, products: int, orders: int, seed: int
) -> AsyncIterator[DemoLog]:
    """Fill the log through the command path; drop the prefix and the servers afterwards."""
    stack0 = Stack.new(redis_url)
    client = connect(redis_url)
    try:
        with mongo_server() as mongo_url:
            async with postgres_database() as dsn:
                stack = dataclasses.replace(stack0, mongo_url=mongo_url, pg_dsn=dsn)
                store = EventStore(client, stack.settings().redis.keys)
                await store.load_functions()
                shop = make_shop(accounts, products, orders, seed=seed, stock=10**9)
                with Timer() as fill:
                    await populate(
                        store, shop, hash_password=Passwords(CHEAP_AUTH).hash, concurrency=32
                    )
                yield DemoLog(
                    stack,
                    store,
                    mongo_url,
                    dsn,
                    round(fill.seconds, 2),
                    f"demo shop through the command path: {accounts} accounts,"
                    f" {products} products, {orders} orders (1-4 lines)",
                )
    finally:
        await client.aclose()
        await drop_prefix(redis_url, stack0.prefix)


async def raw_writes(demo: DemoLog, batches: Batches) -> dict[str, float]:
    """Seconds each store takes to bulk-write data equivalent to the views' (the limits)."""
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(demo.mongo_url)
    raw_db = f"{demo.stack.mongo_db}_raw"
    try:
        async with postgres_pool(demo.dsn, max_size=demo.stack.partitions + 2) as pool:
            await AuditProjection(pool).setup()  # the raw tables copy their shape
            await WarehouseProjection(pool).setup()
            return {
                "read_models": await raw_mongo(mongo[raw_db], batches),
                "audit": await raw_copy_audit(pool, batches),
                "warehouse": await raw_copy_warehouse(pool, batches),
            }
    finally:
        await mongo.drop_database(raw_db)
        await mongo.close()


async def run(
    redis_url: str,
    orders: int = 3000,
    accounts: int = 200,
    products: int = 200,
    batch: int = 500,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with demo_log(redis_url, accounts, products, orders, seed=77) as demo:
        stack, store = demo.stack, demo.store
        heads = await store.heads()
        batches = await read_log(store, batch)
        events = sum(len(c) for chunks in batches.values() for c in chunks)
        raw = await raw_writes(demo, batches)
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(demo.mongo_url)
        keys = stack.settings().redis.keys
        personal = PersonalData(RedisKeyStore(store.redis, keys.prefix), keys.digest_secret)
        try:
            async with postgres_pool(demo.dsn, max_size=stack.partitions + 2) as pool:
                direct: dict[str, Projection] = {
                    "read_models": ReadModelsProjection(
                        mongo[f"{stack.mongo_db}_apply"], personal=personal
                    ),
                    "audit": AuditProjection(pool, schema="audit_apply"),
                    "warehouse": WarehouseProjection(pool, schema="dw_apply"),
                }
                applied: dict[str, float] = {}
                for view, projection in direct.items():
                    await projection.setup()
                    applied[view] = await per_partition(batches, projection.apply)
            same_seconds, same_docs = await raw_same_documents(
                mongo, f"{stack.mongo_db}_apply", f"{stack.mongo_db}_same", batch, stack.partitions
            )
            runner = {v: await time_runner(stack, store.redis, v, batch, heads) for v in VIEWS}
        finally:
            await mongo.close()
        for view in VIEWS:
            raw_rate = rate(events, raw[view])
            run_rate = rate(events, runner[view])
            results[f"{view}_events_per_s"] = run_rate
            results[f"{view}_apply_events_per_s"] = rate(events, applied[view])
            results[f"{view}_raw_events_per_s"] = raw_rate
            results[f"{view}_ratio"] = round(run_rate / raw_rate, 3) if raw_rate else None
        same_rate = rate(events, same_seconds)
        results["read_models_same_documents_events_per_s"] = same_rate
        results["read_models_same_documents"] = same_docs
        results["read_models_vs_raw"] = (
            round(results["read_models_events_per_s"] / same_rate, 3) if same_rate else None
        )
    ratios = [results[f"{v}_ratio"] for v in VIEWS if results.get(f"{v}_ratio") is not None]
    return {
        **results,
        "limit": "raw bulk write of equivalent data to the same store, same batches and"
        " concurrency: MongoDB insert_many (one doc per event), PostgreSQL COPY (the view's rows)",
        "ratio": min(ratios) if ratios else None,
        "params": {
            "events": events,
            "log": demo.description,
            "fill_seconds": demo.fill_seconds,
            "batch": batch,
            "partitions": stack.partitions,
            "concurrency": "one task per partition, as the runner",
            "figures": "<view>_events_per_s: real ProjectorRunner, empty view to caught up;"
            " <view>_apply_events_per_s: projection.apply on pre-decoded batches;"
            " ratio: the worst view's runner rate ÷ its raw rate;"
            " read_models_vs_raw: the runner's rate ÷ bulk_write (InsertOne, same batch and"
            " concurrency) of the read models' final documents into collections with the"
            " same indexes (read_models_same_documents_events_per_s: the log's events ÷ that"
            " write's seconds)",
            "mongodb": "SecantusDB (secantusd-py) on a temporary on-disk store",
            "postgresql": "the machine's server, a fresh database",
            "cores": os.cpu_count(),
        },
    }
