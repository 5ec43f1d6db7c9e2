"""The audit projection: every log entry as one append-only, hash-chained row in PostgreSQL.

Each partition of the log is one chain: row ``n`` holds ``prev_hash`` (row ``n-1``'s hash,
or 64 zeros) and ``hash = sha256(prev_hash ‖ record)``. The record is made of the entry's
fields **byte for byte as the Redis stream stores them**, never of the decoded, upcast
event, so an upcaster, a new defaulted field or a decoder fix never changes a historical
hash, and a rebuild yields the same chain. An entry that does not decode at all is recorded
from the same bytes (a row marked ``undecodable``), so the chain has no hole.

The record (``hash_format`` 2) is a run of netstrings (``<length>:<bytes>,``)::

    ns("streamshop-audit-2") ns(partition) ns(n) ns(entry_id) ns(stored) ns(payload)

* ``stored`` (column ``stored``): the entry's fields in canonical order, the envelope names
  of :data:`events.codec.FIELDS` in that order and then any other field by name (bytewise),
  each as ``ns(name) ns(value)`` with the value's exact bytes, except that ``data`` is
  ``sha256:<hex digest of the stored data>``. The data may hold a secret
  (:data:`SECRET_FIELDS`) that must not reach the audit log; its digest still pins every
  byte of it.
  A compact entry (:mod:`events.codec`: no ``at``) has just its own fields there, so old
  rows and new rows each hash what their entry holds.
* ``payload`` (column ``payload``): :func:`payload_json` of the stored data, the event as
  it was recorded (its stored schema, not upcast), secrets removed; for a compact entry
  that decodes, of its data in the full form (:func:`events.codec.full_data`: the ``type``
  tag and the aggregate's id put back, a function of the stored bytes alone), so the
  column reads the same for both forms. It is hashed so that the column queries show
  cannot be altered unnoticed.

The other columns (event id, type, aggregate, …) are read from ``stored`` and checked
against it by :func:`verify_chains`. Rows of ``hash_format`` 1 (written before, hashed over
the decoded event) still verify by their own rule (:func:`canonical_v1`). The database
refuses UPDATE, DELETE and TRUNCATE on the rows (a trigger), and the checkpoint with the
chain head is committed in the same transaction as the rows it covers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from events.codec import COMPACT_FIELDS, FIELDS, Fields, Recorded, UndecodableEntry, full_data
from events.ids import format_at, ms_at, parse_at, uuid7_ms
from events.positions import parse_stream_id
from events.types import EVENT_TYPES
from projections.views import (
    CheckpointedSchema,
    postgres_pool,
    run_setup,
    schema_name,
    sql_file,
)

GENESIS = "0" * 64
HASH_FORMAT = 2
SECRET_FIELDS = frozenset({"password_hash"})
"""Payload fields that never reach the audit log (invariant 11)."""

COLUMNS = (
    "partition",
    "n",
    "entry_id",
    "event_id",
    "type",
    "schema_version",
    "aggregate",
    "seq",
    "actor",
    "source",
    "correlation",
    "causation",
    "occurred_at",
    "payload",
    "prev_hash",
    "hash",
    "hash_format",
    "stored",
    "undecodable",
    "error",
)

ENVELOPE_COLUMNS = (
    "event_id",
    "type",
    "schema_version",
    "aggregate",
    "seq",
    "actor",
    "source",
    "correlation",
    "causation",
    "occurred_at",
)
"""Columns read from ``stored``; :func:`verify_chains` checks each against it."""


def redact(payload: dict[str, Any]) -> dict[str, Any]:
    if SECRET_FIELDS.isdisjoint(payload):
        return payload
    return {k: v for k, v in payload.items() if k not in SECRET_FIELDS}


# -- the stored entry ------------------------------------------------------------------------

_TAG = b"streamshop-audit-2"
_ENVELOPE = tuple(name.encode() for name in FIELDS)
_ORDER = {name: i for i, name in enumerate(_ENVELOPE)}
_SECRET_BYTES = tuple(name.encode() for name in SECRET_FIELDS)
_COMPACT = tuple(name.encode() for name in COMPACT_FIELDS)
_ENVELOPE_FORMAT = b"".join(b"%d:%b,%%d:%%b," % (len(name), name) for name in _ENVELOPE)
"""``stored`` of an entry holding exactly the envelope fields in order, to fill with
(length, value) pairs."""
_COMPACT_FORMAT = b"".join(b"%d:%b,%%d:%%b," % (len(name), name) for name in _COMPACT)
"""The same for a compact entry (:mod:`events.codec`): the envelope without ``at``."""


def _ns(value: bytes) -> bytes:
    return b"%d:%b," % (len(value), value)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def stored_fields(fields: Fields) -> tuple[bytes, dict[bytes, bytes], bytes | None]:
    """The ``stored`` encoding of an entry's fields (see the module docstring), the fields
    as bytes (for :func:`envelope_columns`) and the stored ``data`` (``None``: no data)."""
    raw: dict[bytes, bytes]
    if isinstance(next(iter(fields), b""), bytes):
        raw = fields  # type: ignore[assignment]
    else:
        raw = {_bytes(k): _bytes(v) for k, v in fields.items()}
    data = raw.get(b"data")
    digest = b"" if data is None else b"sha256:%b" % hashlib.sha256(data).hexdigest().encode()
    names_as_stored = tuple(raw)
    if names_as_stored in (_COMPACT, _ENVELOPE):  # as the store writes them: one format call
        values = list(raw.values())
        values[-1] = digest
        form = _COMPACT_FORMAT if names_as_stored == _COMPACT else _ENVELOPE_FORMAT
        return form % tuple(_flat(values)), raw, data
    names = [name for name in _ENVELOPE if name in raw]
    if len(names) < len(raw):
        names += sorted(k for k in raw if k not in _ORDER)
    stored = b"".join(
        [
            b"%d:%b,%d:%b," % (len(k), k, len(v), v)
            for k, v in ((k, digest if k == b"data" else raw[k]) for k in names)
        ]
    )
    return stored, raw, data


def _flat(values: list[bytes]) -> Iterator[int | bytes]:
    for value in values:
        yield len(value)
        yield value


def parse_stored(stored: bytes) -> dict[bytes, bytes]:
    """Inverse of :func:`stored_fields` (``data`` then holds the digest); ``ValueError`` if
    ``stored`` is not a run of netstring pairs."""
    items: list[bytes] = []
    i = 0
    while i < len(stored):
        colon = stored.index(b":", i)
        length = int(stored[i:colon])
        end = colon + 1 + length
        if length < 0 or stored[end : end + 1] != b",":
            raise ValueError(f"bad netstring at byte {i}")
        items.append(stored[colon + 1 : end])
        i = end + 1
    if len(items) % 2:
        raise ValueError("a field name without a value")
    return dict(zip(items[::2], items[1::2], strict=True))


_TEXT_FIELDS = tuple(name for name in _ENVELOPE if name != b"data")


def _integer(text: str, bits: int) -> int:
    try:
        value = int(text)
    except ValueError:
        return 0
    return value if -(2 ** (bits - 1)) <= value < 2 ** (bits - 1) else 0


def envelope_columns(
    partition: int, entry_id: str, values: dict[bytes, bytes], undecodable: bool
) -> dict[str, Any]:
    """The queryable columns, read from the stored fields; total, so an undecodable entry
    gets a row too (its event id is ``undecodable:<partition>:<entry id>``, unique, as the
    stored one may be missing or taken). Text is decoded leniently and NUL, which
    PostgreSQL text cannot hold, shown as U+FFFD; the exact bytes are in ``stored``.

    A compact entry (no ``at``) that decodes shows the envelope it decodes to: ``at`` from
    its UUIDv7 id and an empty ``correlation`` as the id (:mod:`events.codec`), the same
    columns its full form would have had."""
    texts = [values.get(name, b"").decode(errors="replace") for name in _TEXT_FIELDS]
    if "\x00" in "".join(texts):
        texts = [t.replace("\x00", "\ufffd") for t in texts]
    ev_id, ev_type, schema, aggregate, seq, at_s, actor, correlation, causation, source = texts
    ms = None if undecodable or b"at" in values else uuid7_ms(ev_id)
    if ms is not None:
        at = ms_at(ms)
        correlation = correlation or ev_id
    else:
        try:
            at = parse_at(at_s)
        except (ValueError, OverflowError):
            at = datetime.fromtimestamp(parse_stream_id(entry_id)[0] / 1000, UTC)
    return {
        "event_id": f"undecodable:{partition}:{entry_id}" if undecodable else ev_id,
        "type": ev_type,
        "schema_version": _integer(schema, 32),
        "aggregate": aggregate,
        "seq": _integer(seq, 64),
        "actor": actor,
        "source": source,
        "correlation": correlation,
        "causation": causation,
        "occurred_at": at,
    }


# -- the payload -----------------------------------------------------------------------------


class _Float(Exception):
    pass


def _no_float(text: str) -> Any:
    raise _Float(text)


_SORTED_JSON = msgspec.json.Encoder(order="sorted")
_FLOATLESS = msgspec.json.Decoder(float_hook=_no_float)


def _integral(value: Any) -> Any:
    """Floats with no fraction as integers (PostgreSQL's jsonb writes ``1e16`` back as
    ``10000000000000000``), so the payload reads back as it was hashed."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def payload_json(data: bytes | None) -> str:
    """The ``payload`` column and its hashed form: the stored data parsed as JSON, top-level
    :data:`SECRET_FIELDS` removed, as compact JSON with sorted keys.

    It is a function of the stored bytes alone, and reading it back from jsonb and applying
    it again gives the same text (what :func:`verify_chains` does). Data without floats takes
    msgspec's sorted encoder; with floats, ``json.dumps(sort_keys=True, separators=(",",
    ":"), ensure_ascii=False)`` (the same bytes for everything else). Data that is not a
    JSON object is kept as ``{"$raw": text}``, or ``{}`` when it is not UTF-8 or might hold
    a secret; text PostgreSQL cannot store (``\\u0000``) makes it ``{}``.
    """
    if data is None:
        return "{}"
    value: Any
    text: str | None
    try:
        value = _FLOATLESS.decode(data)
        text = _SORTED_JSON.encode(redact(value)).decode() if isinstance(value, dict) else None
    except (_Float, msgspec.DecodeError):
        try:
            value = _integral(json.loads(data))
            text = (
                json.dumps(redact(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                if isinstance(value, dict)
                else None
            )
            if text is not None:
                text.encode()  # a lone surrogate cannot be stored
        except (ValueError, RecursionError, UnicodeError):
            text = None
    if text is None:
        try:
            raw = data.decode()
        except UnicodeDecodeError:
            return "{}"
        if any(secret in data for secret in _SECRET_BYTES):
            return "{}"
        text = _SORTED_JSON.encode({"$raw": raw}).decode()
    return "{}" if "\\u0000" in text else text


# -- rows and hashes -------------------------------------------------------------------------


def record(partition: int, n: int, entry_id: str, stored: bytes, payload: str) -> bytes:
    """The hashed bytes of a ``hash_format`` 2 row (see the module docstring)."""
    parts = (str(partition).encode(), str(n).encode(), entry_id.encode(), stored, payload.encode())
    return _ns(_TAG) + b"".join([b"%d:%b," % (len(part), part) for part in parts])


def chain_hash(prev_hash: str, record_bytes: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + record_bytes).hexdigest()


def row_of(entry: Recorded, n: int, prev_hash: str) -> dict[str, Any]:
    """The row of one log entry, decoded or not, built from its stored fields only."""
    if entry.fields is None:
        raise ValueError(f"entry {entry.entry_id}: the audit needs the fields as stored")
    stored, values, data = stored_fields(entry.fields)
    broken = isinstance(entry, UndecodableEntry)
    if not broken and data is not None and b"at" not in values:
        # compact: the payload of its full form, as the full entry would have shown
        data = full_data(entry.type, entry.aggregate, data)
    payload = payload_json(data)
    row: dict[str, Any] = {
        "partition": entry.partition,
        "n": n,
        "entry_id": entry.entry_id,
        **envelope_columns(entry.partition, entry.entry_id, values, broken),
        "payload": payload,
        "prev_hash": prev_hash,
        "hash": chain_hash(prev_hash, record(entry.partition, n, entry.entry_id, stored, payload)),
        "hash_format": HASH_FORMAT,
        "stored": stored,
        "undecodable": broken,
        "error": entry.error if isinstance(entry, UndecodableEntry) else None,
    }
    return row


# -- hash format 1 (rows written before the stored-bytes record) -----------------------------


@functools.cache
def _float_free(event_type: str) -> bool:
    """Whether no payload of this event type can hold a float (its JSON schema has no
    ``number``); unknown types are assumed to."""
    cls = EVENT_TYPES.get(event_type)
    return cls is not None and '"number"' not in json.dumps(msgspec.json.schema(cls))


def canonical_v1(row: dict[str, Any]) -> bytes:
    """The hashed form of a ``hash_format`` 1 row: sorted-key compact JSON of its columns.

    The form is fixed by ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``; msgspec's sorted encoder writes the same bytes for strings,
    integers, booleans, null, lists and objects about ten times faster. Floats are the one
    difference (``1e+16`` vs ``1e16``), so an event type that may hold one takes the
    reference path.
    """
    body = {
        "partition": row["partition"],
        "n": row["n"],
        "entry_id": row["entry_id"],
        "event_id": row["event_id"],
        "type": row["type"],
        "schema": row["schema_version"],
        "aggregate": row["aggregate"],
        "seq": row["seq"],
        "actor": row["actor"],
        "source": row["source"],
        "correlation": row["correlation"],
        "causation": row["causation"],
        "occurred_at": format_at(row["occurred_at"]),
        "payload": row["payload"],
    }
    if _float_free(row["type"]):
        return _SORTED_JSON.encode(body)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_fault(row: dict[str, Any], prev: str) -> str | None:
    """Why a row read back from the table does not check out (``None``: it does)."""
    if row["hash_format"] == 1:
        legacy = dict(row, payload=json.loads(row["payload"]))
        if hashlib.sha256(prev.encode() + canonical_v1(legacy)).hexdigest() != row["hash"]:
            return "hash does not match the row's contents"
        return None
    if row["hash_format"] != HASH_FORMAT or row["stored"] is None:
        return f"unknown hash format {row['hash_format']}"
    stored = bytes(row["stored"])
    payload = payload_json(row["payload"].encode())
    if (
        chain_hash(prev, record(row["partition"], row["n"], row["entry_id"], stored, payload))
        != (row["hash"])
    ):
        return "hash does not match the row's contents"
    try:
        values = parse_stored(stored)
    except ValueError as exc:
        return f"stored fields are garbled: {exc}"
    expected = envelope_columns(row["partition"], row["entry_id"], values, row["undecodable"])
    for column in ENVELOPE_COLUMNS:
        if row[column] != expected[column]:
            return f"{column} does not match the stored entry"
    return None


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first row of a partition whose chain does not check out, and why."""

    partition: int
    n: int
    entry_id: str
    event_id: str
    reason: str

    def __str__(self) -> str:
        return (
            f"partition {self.partition} row n={self.n} (entry {self.entry_id}, "
            f"event {self.event_id}): {self.reason}"
        )


@dataclass(frozen=True, slots=True)
class VerifyReport:
    rows: int
    partitions: int
    breaks: list[ChainBreak]
    undecodable: int = 0
    """Rows of entries that do not decode (recorded raw)."""

    @property
    def ok(self) -> bool:
        return not self.breaks


class AuditProjection(CheckpointedSchema):
    """Append-only audit rows in ``<schema>.events`` (see the module docstring)."""

    name = "audit"
    version = 1
    """The schema and rows this code writes; bump it with any change to them: a projector
    that starts against an older audit rebuilds it (``workers.rebuild.upgrade_view``)."""

    CHECKPOINT_START = {"n": 0, "hash": GENESIS}
    """The checkpoint carries the chain head: the next row's ``n - 1`` and ``prev_hash``."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "audit") -> None:
        super().__init__(pool, schema)

    async def setup(self) -> None:
        await run_setup(self.pool, sql_file("audit.sql", self.schema), self.schema)

    records_raw = True
    """The runtime hands this view undecodable entries too (as :class:`UndecodableEntry`),
    in order within the batch: the chain records every entry of the log."""

    replays_apart = True
    """Each partition's chain, rows and checkpoint are its own, so a rebuild may replay
    some partitions in another process (:mod:`workers.replay_split`)."""

    async def apply(self, partition: int, events: Sequence[Recorded]) -> None:
        await self.apply_checkpointed(partition, events, self._append)

    async def _append(
        self, conn: asyncpg.Connection, entries: list[Recorded], head: asyncpg.Record
    ) -> dict[str, Any]:
        """Chain ``entries`` onto the head and copy them in; returns the new head."""
        n, prev = int(head["n"]), str(head["hash"])
        rows: list[tuple[Any, ...]] = []
        for entry in entries:
            n += 1
            row = row_of(entry, n, prev)
            prev = row["hash"]
            rows.append(tuple(row[c] for c in COLUMNS))
        await conn.copy_records_to_table(
            "events", schema_name=self.schema, columns=COLUMNS, records=rows
        )
        return {"n": n, "hash": prev}

    async def verify(self) -> VerifyReport:
        """Recompute every chain; report the first broken row of each partition."""
        return await verify_chains(self.pool, self.schema)


async def verify_chains(pool: asyncpg.Pool, schema: str = "audit") -> VerifyReport:
    """Recompute every chain from the rows alone (the log is not needed): each row's hash
    from its record, each row's envelope columns from its stored fields; the first row of
    each partition that does not check out is reported."""
    s = schema_name(schema)
    breaks: list[ChainBreak] = []
    total = undecodable = 0
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        heads = {
            int(r["partition"]): r
            for r in await conn.fetch(f'SELECT partition, n, hash FROM "{s}".checkpoints')
        }
        partitions = [
            int(r["partition"])
            for r in await conn.fetch(f'SELECT DISTINCT partition FROM "{s}".events')
        ]
        for partition in sorted(set(partitions) | set(heads)):
            prev, expected_n, found = GENESIS, 1, None
            cursor = conn.cursor(
                f'SELECT {", ".join(COLUMNS)} FROM "{s}".events WHERE partition = $1 ORDER BY n',
                partition,
                prefetch=1000,
            )
            async for record in cursor:
                total += 1
                row = dict(record)
                undecodable += bool(row["undecodable"])
                reason = None
                if row["n"] != expected_n:
                    reason = f"expected row n={expected_n}: rows are missing"
                elif row["prev_hash"] != prev:
                    reason = "prev_hash does not match the previous row's hash"
                else:
                    reason = row_fault(row, prev)
                if reason is not None:
                    found = ChainBreak(
                        partition, row["n"], row["entry_id"], row["event_id"], reason
                    )
                    break
                prev, expected_n = row["hash"], expected_n + 1
            head = heads.get(partition)
            if (
                found is None
                and head is not None
                and (head["n"], head["hash"])
                != (
                    expected_n - 1,
                    prev,
                )
            ):
                found = ChainBreak(
                    partition,
                    expected_n,
                    "",
                    "",
                    f"chain ends at n={expected_n - 1} but the checkpoint says n={head['n']}",
                )
            if found is not None:
                breaks.append(found)
    return VerifyReport(
        rows=total,
        partitions=len(set(partitions) | set(heads)),
        breaks=breaks,
        undecodable=undecodable,
    )


@contextlib.asynccontextmanager
async def audit_projection(
    settings: Any, version: str | None = None
) -> AsyncIterator[AuditProjection]:
    """Runtime factory; ``settings`` is ``app.settings.Settings`` (duck-typed).

    ``version`` builds the log in schema ``audit_<version>`` (a rebuild's target).
    """
    async with postgres_pool(settings.postgres.url) as pool:
        yield AuditProjection(pool, f"audit_{version}" if version else "audit")
