"""Helpers shared by the PostgreSQL views: schema-qualified SQL files, setup under a lock,
and mapping driver errors to :class:`~projections.base.SinkUnavailable`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from importlib import resources

import asyncpg

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


async def run_setup(pool: asyncpg.Pool, sql: str, lock_name: str) -> None:
    """Run idempotent DDL under an advisory lock, so concurrent starts do not race."""
    with sink_errors():
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock_name)
            await conn.execute(sql)


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
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()
