"""The audit projection: every event as one append-only, hash-chained row in PostgreSQL.

Each partition of the log is one chain: row ``n`` holds ``prev_hash`` (row ``n-1``'s hash,
or 64 zeros) and ``hash = sha256(prev_hash ‖ canonical row)``. The canonical row is built
only from the log (never from ``recorded_at``), so a rebuild yields the same chain. The
database refuses UPDATE, DELETE and TRUNCATE on the rows (a trigger), and the checkpoint
with the chain head is committed in the same transaction as the rows it covers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from events.codec import RecordedEvent
from events.ids import format_at
from events.positions import parse_stream_id
from events.types import EVENT_TYPES
from projections.views import postgres_pool, run_setup, schema_name, sink_errors, sql_file

GENESIS = "0" * 64
SECRET_FIELDS = frozenset({"password_hash"})
"""Payload fields that never reach the audit log (invariant 8)."""

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
)


def redact(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in SECRET_FIELDS}


_SORTED_JSON = msgspec.json.Encoder(order="sorted")


@functools.cache
def _float_free(event_type: str) -> bool:
    """Whether no payload of this event type can hold a float (its JSON schema has no
    ``number``); unknown types are assumed to."""
    cls = EVENT_TYPES.get(event_type)
    return cls is not None and '"number"' not in json.dumps(msgspec.json.schema(cls))


def canonical(row: dict[str, Any]) -> bytes:
    """The hashed form of a row: sorted-key compact JSON of the log-derived columns.

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


def chain_hash(prev_hash: str, row: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(row)).hexdigest()


def row_of(rec: RecordedEvent, n: int, prev_hash: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "partition": rec.partition,
        "n": n,
        "entry_id": rec.entry_id,
        "event_id": rec.id,
        "type": rec.type,
        "schema_version": rec.schema,
        "aggregate": rec.aggregate,
        "seq": rec.seq,
        "actor": rec.actor,
        "source": rec.source,
        "correlation": rec.correlation,
        "causation": rec.causation,
        "occurred_at": rec.at,
        "payload": redact(msgspec.to_builtins(rec.event)),
        "prev_hash": prev_hash,
    }
    row["hash"] = chain_hash(prev_hash, row)
    return row


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

    @property
    def ok(self) -> bool:
        return not self.breaks


class AuditProjection:
    """Append-only audit rows in ``<schema>.events`` (see the module docstring)."""

    name = "audit"

    def __init__(self, pool: asyncpg.Pool, schema: str = "audit") -> None:
        self.pool = pool
        self.schema = schema_name(schema)

    async def setup(self) -> None:
        await run_setup(self.pool, sql_file("audit.sql", self.schema), f"setup:{self.schema}")

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        if not events:
            return
        s = self.schema
        with sink_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    f'INSERT INTO "{s}".checkpoints (partition, entry_id, n, hash) '
                    "VALUES ($1, '0-0', 0, $2) ON CONFLICT (partition) DO NOTHING",
                    partition,
                    GENESIS,
                )
                head = await conn.fetchrow(
                    f'SELECT entry_id, n, hash FROM "{s}".checkpoints '
                    "WHERE partition = $1 FOR UPDATE",
                    partition,
                )
                done = parse_stream_id(head["entry_id"])
                n, prev = int(head["n"]), str(head["hash"])
                rows: list[tuple[Any, ...]] = []
                for rec in events:
                    if parse_stream_id(rec.entry_id) <= done:
                        continue
                    n += 1
                    row = row_of(rec, n, prev)
                    prev = row["hash"]
                    row["payload"] = _SORTED_JSON.encode(row["payload"]).decode()
                    rows.append(tuple(row[c] for c in COLUMNS))
                if not rows:
                    return
                await conn.copy_records_to_table(
                    "events", schema_name=s, columns=COLUMNS, records=rows
                )
                await conn.execute(
                    f'UPDATE "{s}".checkpoints SET entry_id = $2, n = $3, hash = $4 '
                    "WHERE partition = $1",
                    partition,
                    events[-1].entry_id,
                    n,
                    prev,
                )

    async def checkpoint(self, partition: int) -> str | None:
        with sink_errors():
            value = await self.pool.fetchval(
                f'SELECT entry_id FROM "{self.schema}".checkpoints WHERE partition = $1',
                partition,
            )
        return None if value is None else str(value)

    async def checkpoints(self) -> dict[int, str | None]:
        with sink_errors():
            rows = await self.pool.fetch(
                f'SELECT partition, entry_id FROM "{self.schema}".checkpoints'
            )
        return {int(r["partition"]): str(r["entry_id"]) for r in rows}

    async def verify(self) -> VerifyReport:
        """Recompute every chain; report the first broken row of each partition."""
        return await verify_chains(self.pool, self.schema)


async def verify_chains(pool: asyncpg.Pool, schema: str = "audit") -> VerifyReport:
    s = schema_name(schema)
    breaks: list[ChainBreak] = []
    total = 0
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
                row["payload"] = json.loads(row["payload"])
                reason = None
                if row["n"] != expected_n:
                    reason = f"expected row n={expected_n}: rows are missing"
                elif row["prev_hash"] != prev:
                    reason = "prev_hash does not match the previous row's hash"
                elif chain_hash(prev, row) != row["hash"]:
                    reason = "hash does not match the row's contents"
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
    return VerifyReport(rows=total, partitions=len(set(partitions) | set(heads)), breaks=breaks)


@contextlib.asynccontextmanager
async def audit_projection(
    settings: Any, version: str | None = None
) -> AsyncIterator[AuditProjection]:
    """Runtime factory; ``settings`` is ``app.settings.Settings`` (duck-typed).

    ``version`` builds the log in schema ``audit_<version>`` (a rebuild's target).
    """
    async with postgres_pool(settings.postgres.url) as pool:
        yield AuditProjection(pool, f"audit_{version}" if version else "audit")
