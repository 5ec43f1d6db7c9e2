"""Export the log and the warehouse to a Parquet lake (``streamshop export``).

Layout under the lake root (a local directory or any pyarrow filesystem URL)::

    _manifest.json                                   what the lake holds, and the checkpoint
    log/<EventType>/date=YYYY-MM-DD/part-p<P>-<first>-<last>.parquet
    log/_malformed/date=YYYY-MM-DD/...               entries that cannot be decoded, raw
    warehouse/<run>/<dim_table>/part-0.parquet       one snapshot per run that changed it
    warehouse/<run>/<fact_table>/date=YYYY-MM-DD/part-0.parquet

**The log** is exported incrementally. Each partition is read from its checkpoint up to the
head it had when the run started, ``batch`` entries at a time. Each batch becomes one file per
(event type, date); every file is written under a temporary name, read back for its checksum
and moved into place; then the manifest, holding the new checkpoint, replaces the old one the
same way. The manifest is therefore the commit: a file is part of the lake once the manifest
lists it. A run killed between a move and the manifest write leaves complete files the
manifest does not list (never a partial one under a ``.parquet`` name); the next run deletes
those, and the ``*.tmp-*`` leftovers, before it starts, and exports their entries again from
the checkpoint, so nothing is duplicated. A run with nothing new writes nothing at all.

Each row is the envelope (entry id, partition, position, id, type, schema as stored,
aggregate, seq, at, actor, correlation, causation, source), the entry's ``data`` JSON as
stored (so nothing is lost; a compact entry's in its full form,
:func:`events.codec.full_fields`, so old and new entries read the same) and one column per
scalar field of the event as the current schema reads it (upcast); lists and nested
structs stay in ``data``. Secrets
(``password_hash``) are dropped from both, as in the audit log; personal data is exported as
the log holds it (encrypted where the log encrypts it).

**The warehouse** is exported as a snapshot of its live version (the view pointer, see
:mod:`workers.views`), read in one repeatable-read transaction with ``COPY``: facts
partitioned by date, dimensions whole, together with the warehouse's checkpoints (the log
positions the snapshot covers). A snapshot goes under its own run id and the manifest switches
to it; the snapshot before it is kept for readers still on it, older ones are deleted. When
the live version and its checkpoints are unchanged since the last snapshot, none is taken.

One export at a time per lake: runs are not locked against each other.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TextIO

import asyncpg
import msgspec
import msgspec.inspect as mi
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import redis.asyncio as aioredis
import structlog

from events.codec import FIELDS, decode_entry, full_fields
from events.errors import MalformedEvent
from events.files import FileRoot
from events.keys import Keys
from events.positions import format_position, parse_stream_id
from events.store import EventStore
from events.types import EVENT_TYPES
from projections.audit import SECRET_FIELDS
from projections.views import SETUP_TABLE
from workers.progress import Progress
from workers.views import ViewPointers, pg_schema

log = structlog.get_logger("workers.export")

DEFAULT_LAKE = "./.data/lake"
MANIFEST = "_manifest.json"
FORMAT = 1
MALFORMED = "_malformed"
"""The dataset of entries that cannot be decoded (a leading ``_``: not an event type)."""

ENVELOPE: dict[str, pa.DataType] = {
    "entry_id": pa.string(),
    "partition": pa.int32(),
    "position": pa.string(),
    "id": pa.string(),
    "type": pa.string(),
    "schema": pa.int32(),
    "aggregate": pa.string(),
    "seq": pa.int64(),
    "at": pa.timestamp("ms", tz="UTC"),
    "actor": pa.string(),
    "correlation": pa.string(),
    "causation": pa.string(),
    "source": pa.string(),
    "data": pa.string(),
}

MALFORMED_SCHEMA = pa.schema(
    [
        pa.field("entry_id", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("position", pa.string(), nullable=False),
        *(pa.field(name, pa.string()) for name in FIELDS),
        pa.field("error", pa.string()),
    ]
)

_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


# -- options and report ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportOptions:
    to: str = DEFAULT_LAKE
    """The lake: a directory, or a pyarrow filesystem URL (``s3://bucket/prefix``, ``file://``)."""
    since: datetime | None = None
    """Export no entry appended before this moment (entry ids are append times). It only
    narrows where a partition starts: what the checkpoint covers is never exported again."""
    batch: int = 20_000
    """Entries per read and per commit (files + manifest) of one partition."""
    warehouse: bool = True
    """Also take a snapshot of the warehouse's live version."""


@dataclass(slots=True)
class ExportReport:
    run: str
    lake: str
    events: int = 0
    malformed: int = 0
    files: int = 0
    removed: int = 0
    """Leftovers of an interrupted run deleted before starting."""
    warehouse_snapshot: str | None = None
    """The run id of the warehouse snapshot taken now (``None``: unchanged, or not asked)."""
    warehouse_rows: int = 0
    warehouse_absent: str | None = None
    """The live warehouse schema, when it does not exist (nothing projected yet)."""
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return round(self.events / self.seconds, 1) if self.seconds > 0 else 0.0


def new_run_id() -> str:
    """Sortable by start time, unique enough for concurrent hosts."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


# -- the lake: files, atomic writes, manifest --------------------------------------------------


class Lake(FileRoot):
    """A lake root (see :class:`events.files.FileRoot`) and its manifest."""

    def read_manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] | None = self.read_json(MANIFEST)
        if manifest is None:
            return empty_manifest()
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{self.url}: manifest format {manifest.get('format')!r} unknown")
        return manifest

    def write_manifest(self, manifest: dict[str, Any], run: str) -> None:
        """The commit point of every step: written last, replaced in one move."""
        manifest["updated_at"] = _now()
        self.write_json(MANIFEST, manifest, run)


def empty_manifest() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "source": {},
        "checkpoint": {},
        "log": {"partitions": {}, "files": []},
        "warehouse": None,
        "runs": [],
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def remove_leftovers(lake: Lake, manifest: dict[str, Any]) -> int:
    """Delete what an interrupted run left: temporary files, log files the manifest does not
    list, warehouse snapshots that are neither the current one nor the one before it."""
    listed = {f["path"] for f in manifest["log"]["files"]}
    removed = 0
    for rel in lake.files("log"):
        if rel not in listed:
            lake.delete(rel)
            removed += 1
    for rel in lake.files(""):
        if ".tmp-" in rel.rpartition("/")[2]:
            lake.delete(rel)
            removed += 1
    keep = _snapshots_kept(manifest)
    for info in lake.fs.get_file_info(
        pafs.FileSelector(lake.path("warehouse"), recursive=False, allow_not_found=True)
    ):
        name = info.path.rpartition("/")[2]
        if name not in keep:
            lake.delete_dir(f"warehouse/{name}")
            removed += 1
    return removed


def _snapshots_kept(manifest: dict[str, Any]) -> set[str]:
    wh = manifest.get("warehouse") or {}
    return {run for run in (wh.get("snapshot"), wh.get("previous")) if run}


# -- log entries to Arrow ---------------------------------------------------------------------


def _scalar_type(t: Any) -> pa.DataType | None:
    """The Arrow type of a scalar field (``None``: not a scalar, it stays in ``data``)."""
    match t:
        case mi.Metadata(type=inner):
            return _scalar_type(inner)
        case mi.StrType():
            return pa.string()
        case mi.LiteralType(values=values) if all(isinstance(v, str) for v in values):
            return pa.string()
        case mi.LiteralType(values=values) if all(isinstance(v, int) for v in values):
            return pa.int64()
        case mi.BoolType():
            return pa.bool_()
        case mi.IntType():
            return pa.int64()
        case mi.FloatType():
            return pa.float64()
        case mi.DateTimeType():
            return pa.timestamp("ms", tz="UTC")
        case mi.UnionType(types=types):
            inner_types = [x for x in types if not isinstance(x, mi.NoneType)]
            return _scalar_type(inner_types[0]) if len(inner_types) == 1 else None
    return None


@dataclass(frozen=True, slots=True)
class EventLayout:
    """The Arrow schema of one event type's dataset and which event fields fill it."""

    schema: pa.Schema
    columns: tuple[tuple[str, str], ...]
    """(column name, field name in the event's builtins) for the flattened fields."""


def event_layout(type_name: str) -> EventLayout:
    info = mi.type_info(EVENT_TYPES[type_name])
    assert isinstance(info, mi.StructType)
    fields = [pa.field(name, kind) for name, kind in ENVELOPE.items()]
    columns: list[tuple[str, str]] = []
    for f in info.fields:
        kind = _scalar_type(f.type)
        if kind is None or f.encode_name in SECRET_FIELDS:
            continue
        column = f"data_{f.encode_name}" if f.encode_name in ENVELOPE else f.encode_name
        fields.append(pa.field(column, kind))
        columns.append((column, f.encode_name))
    return EventLayout(pa.schema(fields), tuple(columns))


LAYOUTS: dict[str, EventLayout] = {name: event_layout(name) for name in EVENT_TYPES}


def _redacted(data: str) -> str | None:
    """``data`` without secret fields (``None`` when it holds one and cannot be parsed)."""
    if not any(name in data for name in SECRET_FIELDS):
        return data
    try:
        payload = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    return _encoder.encode({k: v for k, v in payload.items() if k not in SECRET_FIELDS}).decode()


def _texts(fields: dict[bytes, bytes]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in FIELDS:
        raw = fields.get(name.encode())
        out[name] = None if raw is None else raw.decode("utf-8", errors="replace")
    return out


def _entry_date(entry_id: str) -> str:
    ms, _ = parse_stream_id(entry_id)
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def entry_row(
    entry_id: str, fields: dict[bytes, bytes], partition: int
) -> tuple[str, str, dict[str, Any]]:
    """One stream entry as (dataset, date, row); an undecodable one goes to ``_malformed``."""
    position = format_position({partition: entry_id})
    texts = _texts(full_fields(fields))  # a compact entry as its full form (events.codec)
    try:
        rec = decode_entry(entry_id, fields, partition)
    except MalformedEvent as exc:
        data = texts["data"]
        texts["data"] = None if data is None else _redacted(data)
        row = {"entry_id": entry_id, "partition": partition, "position": position, **texts}
        row["error"] = exc.reason
        return MALFORMED, _entry_date(entry_id), row
    data = _redacted(texts["data"] or "")
    row = {
        "entry_id": entry_id,
        "partition": partition,
        "position": position,
        "id": rec.id,
        "type": rec.type,
        "schema": int(texts["schema"] or rec.schema),
        "aggregate": rec.aggregate,
        "seq": rec.seq,
        "at": rec.at,
        "actor": rec.actor,
        "correlation": rec.correlation,
        "causation": rec.causation,
        "source": rec.source,
        "data": data,
    }
    payload = msgspec.to_builtins(rec.event)
    for column, name in LAYOUTS[rec.type].columns:
        row[column] = payload.get(name)
    return rec.type, rec.at.astimezone(UTC).date().isoformat(), row


def rows_table(dataset: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = MALFORMED_SCHEMA if dataset == MALFORMED else LAYOUTS[dataset].schema
    return pa.Table.from_pylist(rows, schema=schema)


# -- exporting the log ------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    lake: Lake
    manifest: dict[str, Any]
    report: ExportReport
    progress: Progress
    batch: int


def _start(checkpoint: str | None, since: datetime | None) -> str:
    """The read's exclusive lower bound: the checkpoint, and not before ``since``."""
    if since is not None:
        ms = int(since.timestamp() * 1000)
        if checkpoint is None or parse_stream_id(checkpoint) < (ms, 0):
            return f"{ms - 1}-{2**64 - 1}" if ms > 0 else "0-0"
    return checkpoint or "0-0"


async def export_partition(
    run: _Run, store: EventStore, p: int, head: str, since: datetime | None
) -> None:
    """Export partition ``p`` from its checkpoint up to ``head``, one commit per batch
    (archive and Redis read as one log, :meth:`~events.store.EventStore.read_raw`)."""
    manifest = run.manifest
    after = _start(manifest["checkpoint"].get(str(p)), since)
    while True:
        rows = await store.read_raw(p, after, run.batch, through=head)
        if not rows:
            return
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for entry_id, fields in rows:
            dataset, day, row = entry_row(entry_id, fields, p)
            groups[(dataset, day)].append(row)
        for (dataset, day), group in sorted(groups.items()):
            first, last = group[0]["entry_id"], group[-1]["entry_id"]
            rel = f"log/{dataset}/date={day}/part-p{p}-{first}-{last}.parquet"
            entry = run.lake.write_table(rel, rows_table(dataset, group), run.report.run)
            entry.update(dataset=dataset, date=day, partition=p, first=first, last=last)
            manifest["log"]["files"].append(entry)
            run.report.files += 1
            if dataset == MALFORMED:
                run.report.malformed += len(group)
        covered = manifest["log"]["partitions"].setdefault(
            str(p), {"first": rows[0][0], "last": rows[-1][0], "rows": 0}
        )
        covered["last"] = rows[-1][0]
        covered["rows"] += len(rows)
        manifest["checkpoint"][str(p)] = rows[-1][0]
        run.lake.write_manifest(manifest, run.report.run)
        run.report.events += len(rows)
        run.progress.add(len(rows))
        if len(rows) < run.batch:
            return
        after = rows[-1][0]


# -- exporting the warehouse ------------------------------------------------------------------

_PG_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "character varying": pa.string(),
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "double precision": pa.float64(),
    "real": pa.float32(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
}


def _date_of(date_key: int) -> str:
    return date(date_key // 10000, date_key // 100 % 100, date_key % 100).isoformat()


async def _table_columns(conn: asyncpg.Connection, schema: str) -> dict[str, pa.Schema]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = $1 ORDER BY table_name, ordinal_position",
        schema,
    )
    tables: dict[str, list[pa.Field]] = defaultdict(list)
    for r in rows:
        if r["table_name"] in ("checkpoints", SETUP_TABLE):
            continue
        kind = _PG_TYPES.get(r["data_type"], pa.string())
        tables[r["table_name"]].append(
            pa.field(r["column_name"], kind, nullable=r["is_nullable"] == "YES")
        )
    return {name: pa.schema(fields) for name, fields in tables.items()}


def _csv_batches(path: str, schema: pa.Schema) -> pacsv.CSVStreamingReader:
    """Read PostgreSQL's CSV (``t``/``f``, unquoted empty = NULL, quoted empty = '')."""
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=4 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),  # a name may hold one
        convert_options=pacsv.ConvertOptions(
            column_types={f.name: f.type for f in schema},
            true_values=["t"],
            false_values=["f"],
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def _write_table_files(
    lake: Lake, base: str, table: str, csv_path: str, schema: pa.Schema, run: str
) -> list[dict[str, Any]]:
    """One COPY output as Parquet: a fact table (it has ``date_key``; the rows come sorted by
    it) one file per ``date=`` directory, written as each day ends; a dimension as one file."""
    reader = _csv_batches(csv_path, schema)
    if table.startswith("dim_") or "date_key" not in schema.names:
        rel = f"{base}/{table}/part-0.parquet"
        return [lake.write_batches(rel, schema, (b.cast(schema) for b in reader), run)]
    files: list[dict[str, Any]] = []
    day: str | None = None
    parts: list[pa.Table] = []

    def flush() -> None:
        if day is not None and parts:
            entry = lake.write_batches(
                f"{base}/{table}/date={day}/part-0.parquet", schema, parts, run
            )
            entry.update(date=day)
            files.append(entry)
        parts.clear()

    for batch in reader:
        part = pa.Table.from_batches([batch]).cast(schema)
        keys = part.column("date_key").to_pylist()
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                if _date_of(keys[start]) != day:
                    flush()
                    day = _date_of(keys[start])
                parts.append(part.slice(start, i - start))
                start = i
    flush()
    return files


async def export_warehouse(settings: Any, run: _Run, redis: aioredis.Redis) -> None:
    """Snapshot the live warehouse version unless it is unchanged since the last snapshot."""
    version = await ViewPointers(redis, settings.redis.prefix).current("warehouse")
    schema = pg_schema("warehouse", version)
    previous = run.manifest.get("warehouse") or {}
    conn = await asyncpg.connect(settings.postgres.url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO'")
            tables = await _table_columns(conn, schema)
            if not tables:
                run.report.warehouse_absent = schema
                return
            positions = {
                str(r["partition"]): r["entry_id"]
                for r in await conn.fetch(
                    f'SELECT partition, entry_id FROM "{schema}".checkpoints ORDER BY partition'
                )
            }
            if previous.get("schema") == schema and previous.get("positions") == positions:
                return
            base = f"warehouse/{run.report.run}"
            out: dict[str, Any] = {}
            run.progress.set_phase("warehouse")
            with tempfile.TemporaryDirectory(prefix="streamshop-export-") as tmp:
                for table, columns in sorted(tables.items()):
                    order = " ORDER BY date_key" if "date_key" in columns.names else ""
                    csv_path = os.path.join(tmp, f"{table}.csv")
                    await conn.copy_from_query(
                        f'SELECT * FROM "{schema}"."{table}"{order}',
                        output=csv_path,
                        format="csv",
                        header=True,
                    )
                    files = _write_table_files(
                        run.lake, base, table, csv_path, columns, run.report.run
                    )
                    rows = sum(f["rows"] for f in files)
                    out[table] = {"rows": rows, "files": files}
                    run.report.warehouse_rows += rows
    finally:
        await conn.close()
    older = previous.get("previous")
    run.manifest["warehouse"] = {
        "snapshot": run.report.run,
        "previous": previous.get("snapshot"),
        "path": base,
        "view_version": version or "base",
        "schema": schema,
        "positions": positions,
        "taken_at": _now(),
        "tables": out,
    }
    run.lake.write_manifest(run.manifest, run.report.run)
    run.report.warehouse_snapshot = run.report.run
    if older and older != run.report.run:
        run.lake.delete_dir(f"warehouse/{older}")


# -- the whole run ----------------------------------------------------------------------------


async def export(
    settings: Any,
    options: ExportOptions,
    progress_stream: TextIO | None = None,
    quiet: bool = False,
) -> ExportReport:
    """Export what is new in the log, then the warehouse snapshot; see the module docstring."""
    started = time.monotonic()
    lake = Lake(options.to)
    report = ExportReport(run=new_run_id(), lake=options.to)
    manifest = lake.read_manifest()
    keys: Keys = settings.redis.keys
    source = {"prefix": keys.prefix, "partitions": keys.partitions}
    if manifest["source"] and manifest["source"] != source:
        raise ValueError(
            f"{options.to} holds the log {manifest['source']}, not {source}: use another lake"
        )
    manifest["source"] = source
    report.removed = remove_leftovers(lake, manifest)
    if report.removed:
        log.warning("export_leftovers_removed", lake=options.to, count=report.removed)
    redis = settings.redis.connect()
    progress = Progress("export", stream=progress_stream, enabled=not quiet)
    progress.phase = "log"
    run = _Run(lake, manifest, report, progress, max(1, options.batch))
    started_at = _now()
    try:
        store = EventStore(redis, keys)
        heads = await store.heads()
        async with redis.pipeline(transaction=False) as pipe:
            for p in range(keys.partitions):
                pipe.xlen(keys.log(p))
            lengths = await pipe.execute()
        done = {p: manifest["log"]["partitions"].get(str(p), {}).get("rows", 0) for p in heads}
        progress.start(sum(max(0, lengths[p] - done[p]) for p in heads))
        for p, head in heads.items():
            if head:
                await export_partition(run, store, p, head, options.since)
        if options.warehouse:
            await export_warehouse(settings, run, redis)
        progress.set_phase("done", progress.done)
        progress.finish()
    finally:
        await redis.aclose()
    report.seconds = round(time.monotonic() - started, 3)
    if report.files or report.warehouse_snapshot:
        manifest["runs"].append(
            {
                "run": report.run,
                "started_at": started_at,
                "finished_at": _now(),
                "since": None if options.since is None else options.since.isoformat(),
                "events": report.events,
                "files": report.files,
                "warehouse_snapshot": report.warehouse_snapshot,
            }
        )
        lake.write_manifest(manifest, report.run)
    log.info(
        "export_done",
        run=report.run,
        lake=options.to,
        events=report.events,
        files=report.files,
        warehouse=report.warehouse_snapshot,
        seconds=report.seconds,
    )
    return report


def verify_lake(lake: Lake, unlisted_ok: bool = False) -> list[str]:
    """Problems of a lake (empty: consistent): a listed file missing or not as listed
    (checksum, size, rows), a partition whose files do not add up to the rows the manifest
    covers, and, unless ``unlisted_ok``, a Parquet file under ``log/`` or the current
    snapshot that the manifest does not list (what a killed run may leave until the next)."""
    manifest = lake.read_manifest()
    wh = manifest.get("warehouse") or {}
    entries = list(manifest["log"]["files"])
    entries += [f for table in (wh.get("tables") or {}).values() for f in table["files"]]
    problems: list[str] = []
    for entry in entries:
        try:
            sha, size = lake._digest(entry["path"])
        except FileNotFoundError:
            problems.append(f"{entry['path']}: listed, missing")
            continue
        if (sha, size) != (entry["sha256"], entry["bytes"]):
            problems.append(f"{entry['path']}: checksum or size differs from the manifest")
            continue
        with lake.fs.open_input_file(lake.path(entry["path"])) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        if rows != entry["rows"]:
            problems.append(f"{entry['path']}: {rows} rows, the manifest says {entry['rows']}")
    per_partition: dict[str, int] = defaultdict(int)
    for entry in manifest["log"]["files"]:
        per_partition[str(entry["partition"])] += entry["rows"]
    for p, covered in manifest["log"]["partitions"].items():
        if per_partition[p] != covered["rows"]:
            problems.append(
                f"partition {p}: files hold {per_partition[p]} rows, "
                f"the manifest covers {covered['rows']}"
            )
    if not unlisted_ok:
        listed = {entry["path"] for entry in entries}
        scope = ["log"] + ([wh["path"]] if wh.get("path") else [])
        for rel in (rel for under in scope for rel in lake.files(under)):
            if rel.endswith(".parquet") and rel not in listed:
                problems.append(f"{rel}: not in the manifest")
    return problems
