"""Helpers shared by the PostgreSQL views: schema-qualified SQL files, setup under a lock,
mapping driver errors to :class:`~projections.base.SinkUnavailable`, and the checkpointed
transaction that makes a replayed entry a no-op."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, Protocol, TypeVar

import asyncpg

from events.positions import parse_stream_id
from projections.base import SinkUnavailable

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def schema_name(name: str) -> str:
    """Validate a schema name (it is interpolated into SQL, so only plain identifiers)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain lower-case SQL identifier: {name!r}")
    return name


def sql_file(name: str, schema: str) -> str:
    text = resources.files("projections").joinpath("sql", name).read_text()
    return text.replace("{schema}", f'"{schema_name(schema)}"')


SETUP_TABLE = "setup_applied"
"""A table inside each view schema naming the digest of the DDL last applied to it. It goes
when the schema is dropped, so a dropped view is set up again."""


async def run_setup(pool: asyncpg.Pool, sql: str, schema: str) -> None:
    """Run idempotent DDL once per version of it, under an advisory lock.

    The DDL is skipped when the schema already records its digest. Re-running it is not free:
    ``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` takes an ACCESS EXCLUSIVE lock on its table
    even when the column exists, and ``CREATE INDEX IF NOT EXISTS`` a SHARE lock, so a second
    projector starting beside a live one (a restart, a rolling deploy) queued behind the live
    writer's transactions, blocked every later one, and could deadlock with it. Concurrent
    first set-ups are serialised by the advisory lock and the digest is checked again under it.
    """
    digest = hashlib.sha256(sql.encode()).hexdigest()
    table = f'"{schema_name(schema)}".{SETUP_TABLE}'
    with sink_errors():
        async with pool.acquire() as conn:
            if await _applied(conn, schema, table) == digest:
                return
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"setup:{schema}")
                if await _applied(conn, schema, table) == digest:
                    return
                await conn.execute(sql)
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (one boolean PRIMARY KEY DEFAULT true"
                    " CHECK (one), digest text NOT NULL, applied_at timestamptz NOT NULL)"
                )
                await conn.execute(
                    f"INSERT INTO {table} (digest, applied_at) VALUES ($1, now())"
                    " ON CONFLICT (one) DO UPDATE SET digest = EXCLUDED.digest,"
                    " applied_at = EXCLUDED.applied_at",
                    digest,
                )


async def _applied(conn: asyncpg.Connection, schema: str, table: str) -> str | None:
    """The digest of the DDL last applied to ``schema``, if any (no lock taken on its tables)."""
    exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".{SETUP_TABLE}')
    if exists is None:
        return None
    return await conn.fetchval(f"SELECT digest FROM {table}")  # type: ignore[no-any-return]


@contextlib.contextmanager
def sink_errors() -> Iterator[None]:
    """Connection loss, timeouts and a server shutting down are the sink's fault, not the event's."""
    try:
        yield
    except (
        OSError,
        TimeoutError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.TooManyConnectionsError,
    ) as exc:
        raise SinkUnavailable(f"{type(exc).__name__}: {exc}") from exc


@contextlib.asynccontextmanager
async def postgres_pool(dsn: str, max_size: int = 8) -> AsyncIterator[asyncpg.Pool]:
    """A pool for one PostgreSQL view, closed on exit."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, reset=keep_session)
    try:
        yield pool
    finally:
        await pool.close()


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a released connection of a view's pool needs besides asyncpg's own rollback of
    an open transaction: nothing. asyncpg's default reset (``pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL``) is a round trip on every release, and a view holds no
    session state for it to undo: no ``SET``, ``LISTEN``, cursor or session-level lock, its
    advisory locks are transaction-scoped (``pg_advisory_xact_lock``)."""


class _Positioned(Protocol):
    @property
    def entry_id(self) -> str: ...


E = TypeVar("E", bound=_Positioned)

Write = Callable[[asyncpg.Connection, list[E], asyncpg.Record], Awaitable[Mapping[str, Any]]]
"""``write(conn, fresh, head)``: write the rows of the entries not applied yet, in the
caller's transaction; ``head`` is the partition's checkpoint row as it was. Returns the
checkpoint columns to set besides ``entry_id`` (the audit's chain head; ``{}`` if none)."""


class CheckpointedSchema:
    """A PostgreSQL view whose ``<schema>.checkpoints`` row per partition (``partition``,
    ``entry_id`` and any columns of :attr:`CHECKPOINT_START`) is written in the same
    transaction as the rows it covers, so a replayed entry at or below it is a no-op."""

    CHECKPOINT_START: Mapping[str, Any] = {}
    """The other checkpoint columns of a partition before its first entry."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema_name(schema)

    async def lock_checkpoint(self, conn: asyncpg.Connection, partition: int) -> asyncpg.Record:
        """The checkpoint row of ``partition`` (created at ``0-0``), locked ``FOR UPDATE``
        until the caller's transaction ends: applies of one partition serialise on it.

        The row is created only when the lock finds none, so the common case is one
        statement, not an insert that does nothing and then the lock. Two first writers both
        find none; the second's insert waits for the first's commit, then locks and returns
        the row as the first left it (``DO UPDATE`` of nothing, ``RETURNING``)."""
        start = {"entry_id": "0-0", **self.CHECKPOINT_START}
        columns = ", ".join(start)
        s = f'"{self.schema}"'
        head: asyncpg.Record = await conn.fetchrow(
            f"SELECT {columns} FROM {s}.checkpoints WHERE partition = $1 FOR UPDATE", partition
        )
        if head is None:  # the partition's first entry: create the row, locked as well
            marks = ", ".join(f"${i}" for i in range(2, len(start) + 2))
            head = await conn.fetchrow(
                f"INSERT INTO {s}.checkpoints (partition, {columns}) VALUES ($1, {marks})"
                " ON CONFLICT (partition) DO UPDATE SET partition = excluded.partition"
                f" RETURNING {columns}",
                partition,
                *start.values(),
            )
        return head

    async def set_checkpoint(
        self, conn: asyncpg.Connection, partition: int, values: Mapping[str, Any]
    ) -> None:
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(values, start=2))
        await conn.execute(
            f'UPDATE "{self.schema}".checkpoints SET {sets} WHERE partition = $1',
            partition,
            *values.values(),
        )

    async def apply_checkpointed(
        self, partition: int, events: Sequence[E], write: Write[E]
    ) -> None:
        """One transaction: lock the checkpoint, ``write`` the entries after it, move it to
        the last of them, commit. Nothing is written when every entry is at or below it."""
        if not events:
            return
        with sink_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                head = await self.lock_checkpoint(conn, partition)
                done = parse_stream_id(head["entry_id"])
                fresh = [e for e in events if parse_stream_id(e.entry_id) > done]
                if not fresh:
                    return
                extra = await write(conn, fresh, head)
                await self.set_checkpoint(
                    conn, partition, {"entry_id": fresh[-1].entry_id, **extra}
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
