"""Prove a live view equals the log: fold the log into a scratch version and compare.

The comparison is made at the live view's own position: the scratch version is folded up
to exactly the live checkpoints of every partition (in rounds while the live view moves,
then under a short pause of the live projector), so a running system can be verified
without stopping its writers. Both versions are reduced to a digest per document or row
(build timestamps such as ``recorded_at`` left out), keyed by ``_id`` or primary key; any
missing, extra or different one is a difference. The scratch version is dropped after.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from pymongo import AsyncMongoClient

from events.positions import format_position
from events.store import EventStore
from projections.base import Projection
from projections.views import SETUP_TABLE
from workers.progress import Progress
from workers.rebuild import RebuildOptions, locked
from workers.registry import factory_for
from workers.replay import ReplayStats, backlog, catch_up, replay
from workers.views import (
    BASE,
    VIEWS,
    ViewPointers,
    bind_to_log,
    drop_version,
    label,
    mongo_collections,
    new_version,
    open_view,
    pg_schema,
)

log = structlog.get_logger("workers.verify")

EXCLUDED_COLUMNS = frozenset({"recorded_at"})
"""Columns that record when a row was built, not what the log says: never compared."""

EXCLUDED_TABLES = frozenset({"meta", SETUP_TABLE})
"""Tables that record which log a view belongs to (checked by :func:`check_identity` and
on opening a view) and which DDL built it, not a fold of the log: never compared."""

Snapshot = dict[str, dict[str, str]]
"""Table or collection role → key (JSON) → digest of the document or row."""


@dataclass(frozen=True, slots=True)
class Difference:
    table: str
    key: str
    kind: str
    """``missing in live``, ``extra in live`` or ``differs``."""
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.table} {self.key}: {self.kind}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(slots=True)
class VerifyReport:
    view: str
    live_version: str
    position: str
    """The live view's checkpoints the comparison was made at."""
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Table → (rows in the live view, rows in the fold of the log)."""
    differences: list[Difference] = field(default_factory=list)
    """The first differences (at most ``show``), with details."""
    total_differences: int = 0
    behind: int = 0
    """Entries in the log after the live view's position (not compared)."""

    @property
    def ok(self) -> bool:
        return self.total_differences == 0


def _digest(value: Any) -> str:
    body = json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(body.encode()).hexdigest()


def _key(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# -- snapshots -------------------------------------------------------------------------------


async def snapshot(settings: Any, name: str, version: str) -> Snapshot:
    """Every document or row of one version of view ``name``, as key → digest."""
    if name == "read_models":
        return await _mongo_snapshot(settings, version)
    return await _pg_snapshot(settings, pg_schema(name, version))


def _roles(version: str) -> dict[str, str]:
    names = mongo_collections(version)
    return {
        "accounts": names.accounts,
        "products": names.products,
        "orders": names.orders,
        "carts": names.carts,
        "categories": names.categories,
        "checkpoints": names.checkpoints,
    }


async def _mongo_snapshot(settings: Any, version: str) -> Snapshot:
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    try:
        db = client[settings.mongo.database]
        result: Snapshot = {}
        for role, collection in _roles(version).items():
            docs = await db[collection].find({}).to_list(None)
            result[role] = {_key(doc["_id"]): _digest(doc) for doc in docs}
        return result
    finally:
        await client.close()


async def _tables(conn: asyncpg.Connection, schema: str) -> dict[str, list[str]]:
    """Base tables of ``schema`` → their primary-key columns (all columns if none)."""
    rows = await conn.fetch(
        "SELECT c.relname AS table, "
        " COALESCE((SELECT array_agg(a.attname ORDER BY k.ord)"
        "   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
        "   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
        "   WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS pk"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
        schema,
    )
    return {r["table"]: list(r["pk"]) for r in rows if r["table"] not in EXCLUDED_TABLES}


async def _pg_snapshot(settings: Any, schema: str) -> Snapshot:
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        result: Snapshot = {}
        excluded = " - ".join(f"'{c}'" for c in sorted(EXCLUDED_COLUMNS))
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for table, pk in (await _tables(conn, schema)).items():
                key = (
                    f"jsonb_build_array({', '.join(f't.{c}' for c in pk)})::text"
                    if pk
                    else f"md5((to_jsonb(t) - {excluded})::text)"
                )
                rows = await conn.fetch(
                    f"SELECT {key} AS k, md5((to_jsonb(t) - {excluded})::text) AS d"
                    f' FROM "{schema}"."{table}" t'
                )
                result[table] = {r["k"]: r["d"] for r in rows}
        return result
    finally:
        await conn.close()


async def _detail(settings: Any, name: str, versions: tuple[str, str], table: str, key: str) -> str:
    """Which fields differ between the live and the folded document or row."""
    a = await _fetch_one(settings, name, versions[0], table, key)
    b = await _fetch_one(settings, name, versions[1], table, key)
    if a is None or b is None:
        return ""
    fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(
        f"{f}: live={json.dumps(a.get(f), default=_plain)[:80]}"
        f" log={json.dumps(b.get(f), default=_plain)[:80]}"
        for f in fields[:5]
    )


async def _fetch_one(
    settings: Any, name: str, version: str, table: str, key: str
) -> dict[str, Any] | None:
    if name == "read_models":
        client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
        try:
            db = client[settings.mongo.database]
            doc = await db[_roles(version)[table]].find_one({"_id": json.loads(key)})
            return None if doc is None else dict(doc)
        finally:
            await client.close()
    schema = pg_schema(name, version)
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        pk = (await _tables(conn, schema)).get(table) or []
        if not pk:
            return None
        row = await conn.fetchval(
            f'SELECT to_jsonb(t)::text FROM "{schema}"."{table}" t'
            f" WHERE jsonb_build_array({', '.join(f't.{c}' for c in pk)})::text = $1",
            key,
        )
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row)
        for column in EXCLUDED_COLUMNS:
            data.pop(column, None)
        return data
    finally:
        await conn.close()


def compare(
    live: Snapshot, expected: Snapshot
) -> tuple[dict[str, tuple[int, int]], list[Difference], int]:
    """Counts per table, the differences in a stable order, and how many there are."""
    counts: dict[str, tuple[int, int]] = {}
    differences: list[Difference] = []
    for table in sorted(set(live) | set(expected)):
        a, b = live.get(table, {}), expected.get(table, {})
        counts[table] = (len(a), len(b))
        for key in sorted(set(a) | set(b)):
            if key not in a:
                differences.append(Difference(table, key, "missing in live"))
            elif key not in b:
                differences.append(Difference(table, key, "extra in live"))
            elif a[key] != b[key]:
                differences.append(Difference(table, key, "differs"))
    return counts, differences, len(differences)


# -- folding at the live view's position -----------------------------------------------------


async def _live_checkpoints(projection: Projection, partitions: int) -> dict[int, str | None]:
    return {p: await projection.checkpoint(p) for p in range(partitions)}


async def _settled_checkpoints(
    projection: Projection, partitions: int, within: float = 10.0
) -> dict[int, str | None]:
    """Checkpoints once they stop moving (an apply that began before the pause finishes)."""
    deadline = time.monotonic() + within
    last = await _live_checkpoints(projection, partitions)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = await _live_checkpoints(projection, partitions)
        if now == last:
            return now
        last = now
    return last


async def verify_view(
    settings: Any,
    name: str,
    *,
    batch: int = 2000,
    show: int = 10,
    rounds: int = 10,
    options: RebuildOptions | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Fold the log into a scratch version at the live view's position and compare them
    (``progress``: entries folded out of the log's length)."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r} (known: {', '.join(VIEWS)})")
    opts = options or RebuildOptions(batch=batch)
    redis = settings.redis.connect()
    store = EventStore(redis, settings.redis.keys)
    pointers = ViewPointers(redis, settings.redis.prefix)
    partitions = store.keys.partitions
    factory = factory_for(name)
    try:
        async with locked(pointers, name, opts) as keeper:
            scratch = new_version()
            try:
                await pointers.register(name, scratch)
                live_version = await pointers.current(name)
                stats = ReplayStats()
                positions = {p: "0-0" for p in range(partitions)}
                async with (
                    open_view(factory, settings, scratch, redis=redis) as folded,
                    open_view(factory, settings, live_version, redis=redis, claim=False) as live,
                ):
                    await folded.setup()
                    if progress is not None:
                        progress.phase = "fold"
                        progress.start(await store.count())

                    async def live_position() -> dict[int, str | None]:
                        return await _live_checkpoints(live, partitions)

                    await catch_up(
                        store,
                        folded,
                        positions,
                        batch,
                        stats,
                        within=4 * batch,
                        rounds=rounds,
                        target=live_position,
                        progress=progress,
                    )
                    async with keeper.paused():
                        target = await _settled_checkpoints(live, partitions)
                        await replay(
                            store, folded, positions, batch, stats, until=target, progress=progress
                        )
                        live_snap = await snapshot(settings, name, live_version)
                    if progress is not None:
                        progress.set_phase("compare")
                    expected = await snapshot(settings, name, scratch)
                    if progress is not None:
                        progress.finish()
                counts, differences, total = compare(live_snap, expected)
                shown = []
                for diff in differences[:show]:
                    detail = ""
                    if diff.kind == "differs":
                        detail = await _detail(
                            settings, name, (live_version, scratch), diff.table, diff.key
                        )
                    shown.append(Difference(diff.table, diff.key, diff.kind, detail))
                behind = await backlog(
                    store, {p: target.get(p) or "0-0" for p in range(partitions)}, 10_000
                )
                report = VerifyReport(
                    view=name,
                    live_version=label(live_version),
                    position=format_position({p: e for p, e in target.items() if e}),
                    counts=counts,
                    differences=shown,
                    total_differences=total,
                    behind=behind,
                )
            finally:
                await drop_version(settings, name, scratch)
                await pointers.unregister(name, scratch)
    finally:
        await redis.aclose()
    log.info(
        "verify_done",
        view=name,
        live_version=report.live_version,
        ok=report.ok,
        differences=report.total_differences,
        behind=report.behind,
    )
    return report


async def check_identity(settings: Any, name: str) -> str | None:
    """The log the live version of view ``name`` records (``None``: nothing built yet, or
    a view older than identities whose checkpoints this log holds). Raises
    :class:`~projections.identity.ForeignView` for a view of another log. Writes nothing."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r} (known: {', '.join(VIEWS)})")
    redis = settings.redis.connect()
    try:
        version = await ViewPointers(redis, settings.redis.prefix).current(name)
        factory = factory_for(name)
        cm = factory(settings) if version == BASE else factory(settings, version=version)
        async with cm as projection:
            return await bind_to_log(settings, projection, redis=redis, claim=False)
    finally:
        await redis.aclose()


__all__ = [
    "BASE",
    "Difference",
    "VerifyReport",
    "check_identity",
    "compare",
    "snapshot",
    "verify_view",
]
