"""Admin access to the audit log: filtered, paginated rows, and a chain verification."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from app.auth import admin_only
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.cursors import bad_param, decode_cursor, encode_cursor
from app.queries.read_side import read_side, store_errors
from app.validation import NO_NUL

SORT = "-occurred_at"


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    type: str
    aggregate: str
    seq: int
    actor: str
    source: str
    correlation: str
    causation: str
    occurred_at: datetime
    recorded_at: datetime
    payload: dict[str, Any]
    partition: int
    entry_id: str
    n: int
    prev_hash: str
    hash: str


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AuditEntry]
    next_cursor: str | None


class ChainBreakOut(msgspec.Struct, frozen=True, kw_only=True):
    partition: int
    n: int
    entry_id: str
    event_id: str
    reason: str


class VerifyOut(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    rows: int
    partitions: int
    breaks: list[ChainBreakOut]


Text = Annotated[str | None, QueryParameter(max_length=200, pattern=NO_NUL)]
"""A filter compared in PostgreSQL, whose ``text`` cannot hold NUL: one is a 400 naming it."""


class AuditController(Controller):
    path = "/audit"
    guards = [admin_only]
    tags = ["audit"]

    @get("/", operation_id="listAudit", responses=problem_responses(400, 401, 403))
    async def list_entries(
        self,
        state: State,
        actor: Text = None,
        type: Text = None,
        aggregate: Text = None,
        since: Annotated[datetime | None, QueryParameter(name="from", required=False)] = None,
        until: Annotated[datetime | None, QueryParameter(name="to", required=False)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=1000)] = None,
        min_position: MinPosition = None,
    ) -> Response[AuditPage]:
        """Audit rows, newest first; ``from`` inclusive, ``to`` exclusive (RFC 3339)."""
        side = await read_side(state)
        view = await wait_for(side.audit, min_position)
        where, args = [], []
        for column, value in (("actor", actor), ("type", type), ("aggregate", aggregate)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if since is not None:
            args.append(since)
            where.append(f"occurred_at >= ${len(args)}")
        if until is not None:
            args.append(until)
            where.append(f"occurred_at < ${len(args)}")
        if cursor:
            c = decode_cursor(cursor, SORT)
            if not isinstance(c.value, datetime) or "\x00" in c.id:
                raise bad_param("cursor", "not a cursor this API issued")
            args.extend([c.value, c.id])
            where.append(f"(occurred_at, event_id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        sql = (
            f'SELECT * FROM "{side.audit.schema}".events'
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY occurred_at DESC, event_id DESC LIMIT ${len(args)}"
        )
        with store_errors():
            rows = await side.pool.fetch(sql, *args)
        more = len(rows) > limit
        items = [
            AuditEntry(
                event_id=r["event_id"],
                type=r["type"],
                aggregate=r["aggregate"],
                seq=r["seq"],
                actor=r["actor"],
                source=r["source"],
                correlation=r["correlation"],
                causation=r["causation"],
                occurred_at=r["occurred_at"],
                recorded_at=r["recorded_at"],
                payload=json.loads(r["payload"]),
                partition=r["partition"],
                entry_id=r["entry_id"],
                n=r["n"],
                prev_hash=r["prev_hash"],
                hash=r["hash"],
            )
            for r in rows[:limit]
        ]
        next_cursor = (
            encode_cursor(SORT, items[-1].occurred_at, items[-1].event_id) if more else None
        )
        return view_response(AuditPage(items=items, next_cursor=next_cursor), view)

    @get("/verify", operation_id="verifyAudit", responses=problem_responses(401, 403))
    async def verify(self, state: State) -> VerifyOut:
        """Recompute every partition's hash chain; ``breaks`` names the first bad row of each."""
        side = await read_side(state)
        with store_errors():
            report = await side.audit.verify()
        return VerifyOut(
            ok=report.ok,
            rows=report.rows,
            partitions=report.partitions,
            breaks=[
                ChainBreakOut(
                    partition=b.partition,
                    n=b.n,
                    entry_id=b.entry_id,
                    event_id=b.event_id,
                    reason=b.reason,
                )
                for b in report.breaks
            ],
        )
