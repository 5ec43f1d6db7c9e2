"""Which log a view was built from: a meta record kept in the view's own store.

A MongoDB view version keeps ``{"_id": "log", "log": <identity>}`` in its ``meta``
collection (``meta_<version>`` for a rebuilt one); a PostgreSQL view keeps the row
``('log', <identity>)`` in ``<schema>.meta``. The record is written when the version is
first opened for writing (the live projector on a fresh view, a rebuild on its shadow) and
never changed after: a view meets a log through :func:`bind`, which refuses a view recorded
for another log with :class:`ForeignView` instead of mixing two logs in one view.

The record also holds the version of the projection that built the view version
(:func:`built_version`), written with the log's identity when a new, empty version is
first opened: a view is only ever written by the code of the version that built it.

A view from before identities existed records nothing. It is taken as this log's (and
recorded, when the caller may write) only if every entry its checkpoints name is in this
log; otherwise it is refused too. Knowing the log stays with the caller (``holds``):
projections do not talk to Redis.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import asyncpg
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from projections.audit import AuditProjection
from projections.base import DEFAULT_VERSION, SinkUnavailable
from projections.read_models.projection import Collections, ReadModelsProjection
from projections.views import schema_name, sink_errors
from projections.warehouse import WarehouseProjection

META_KEY = "log"
"""The ``_id`` of the MongoDB meta document and the ``key`` of the PostgreSQL meta row."""

VERSION_KEY = "version"
"""The field of the MongoDB meta document and the ``key`` of the PostgreSQL meta row that
hold the version of the projection that built the view version."""

_SETTINGS_OF = {"read_models": "MONGO_URL / MONGO_DB", "audit": "DATABASE_URL"}


class ForeignView(SinkUnavailable):
    """A view that was built from another log: refused, never mixed with this one.

    A :class:`SinkUnavailable` for the live runtime: should a projector meet one in the
    middle of a run (the pointer moved to it), it backs off and acknowledges nothing, and
    never dead-letters the entries. Everywhere else it is reported as it is.
    """

    def __init__(self, view: str, where: str, recorded: str | None, log: str) -> None:
        self.view, self.where, self.recorded, self.log = view, where, recorded, log
        elsewhere = _SETTINGS_OF.get(view, "DATABASE_URL")
        if recorded is not None:
            what = f"{view} view ({where}) was built from log {recorded} but this log is {log}"
        else:
            what = (
                f"{view} view ({where}) records no log, and its checkpoints name entries "
                f"that this log {log} does not hold: it was built from another log"
            )
        super().__init__(f"{what}; run `streamshop rebuild {view}` or point {elsewhere} elsewhere")


class ViewVersionMismatch(SinkUnavailable):
    """A view version built by another version of its projection: refused, so new code
    never writes to an old schema (nor old code to a new one).

    A :class:`SinkUnavailable` for the live runtime: it backs off and acknowledges nothing,
    and never dead-letters the entries. A projector meets an older view at start-up and
    rebuilds it first (``workers.rebuild.upgrade_view``).
    """

    def __init__(self, view: str, where: str, built: int, code: int) -> None:
        self.view, self.where, self.built, self.code = view, where, built, code
        if built < code:
            hint = f"starting the projector rebuilds it (or run `streamshop rebuild {view}`)"
        else:
            hint = "this code is older than the view: run the newer projector"
        super().__init__(
            f"{view} view ({where}) was built by version {built} of its projection "
            f"but this code is version {code}; {hint}"
        )


class ViewMeta(Protocol):
    """The meta record of one version of a view, in its store."""

    where: str
    """Where the version lives, for messages (``schema dw``, ``collections …_v1``)."""

    async def recorded(self) -> str | None:
        """The log identity recorded (``None``: none, or the version does not exist yet)."""
        ...

    async def record(self, log: str, version: int | None = None) -> str:
        """Record ``log`` (and the projection ``version`` that builds it, if given) unless an
        identity is recorded already; return the one recorded."""
        ...

    async def built_by(self) -> int | None:
        """The projection version recorded (``None``: none)."""
        ...

    async def positions(self) -> dict[int, str]:
        """The version's checkpoints, partition → last entry id applied."""
        ...


class MongoMeta:
    """The ``meta`` document of a read-models version."""

    def __init__(self, db: AsyncDatabase[Any], collections: Collections) -> None:
        self.db = db
        self.collections = collections
        self.where = f"collections {collections.accounts}, … in database {db.name}"

    async def recorded(self) -> str | None:
        try:
            doc = await self.db[self.collections.meta].find_one({"_id": META_KEY})
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        return None if doc is None else str(doc["log"])

    async def record(self, log: str, version: int | None = None) -> str:
        fields: dict[str, Any] = {"log": log}
        if version is not None:
            fields[VERSION_KEY] = version
        try:
            with contextlib.suppress(DuplicateKeyError):  # a concurrent first record won
                await self.db[self.collections.meta].update_one(
                    {"_id": META_KEY}, {"$setOnInsert": fields}, upsert=True
                )
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        return await self.recorded() or log

    async def built_by(self) -> int | None:
        try:
            doc = await self.db[self.collections.meta].find_one({"_id": META_KEY})
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        return None if doc is None or VERSION_KEY not in doc else int(doc[VERSION_KEY])

    async def positions(self) -> dict[int, str]:
        try:
            docs = await self.db[self.collections.checkpoints].find({}).to_list(None)
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        return {int(doc["_id"]): str(doc["entry_id"]) for doc in docs}


_MISSING = (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError)


class PostgresMeta:
    """The ``meta`` table of a PostgreSQL view's schema (audit or warehouse version)."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection, schema: str) -> None:
        self.pool = pool
        self.schema = schema_name(schema)
        self.where = f"schema {self.schema}"

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        if isinstance(self.pool, asyncpg.Pool):
            async with self.pool.acquire() as conn:
                yield conn
        else:
            yield self.pool

    async def recorded(self) -> str | None:
        with sink_errors():
            async with self._conn() as conn:
                try:
                    value = await conn.fetchval(
                        f'SELECT value FROM "{self.schema}".meta WHERE key = $1', META_KEY
                    )
                except _MISSING:
                    return None
        return None if value is None else str(value)

    async def record(self, log: str, version: int | None = None) -> str:
        s = f'"{self.schema}"'
        with sink_errors():
            async with self._conn() as conn, conn.transaction():
                # The lock the projections' setup takes: concurrent DDL on one schema races.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"setup:{self.schema}"
                )
                await conn.execute(
                    f"CREATE SCHEMA IF NOT EXISTS {s}; "
                    f"CREATE TABLE IF NOT EXISTS {s}.meta "
                    "(key text PRIMARY KEY, value text NOT NULL)"
                )
                inserted = await conn.fetchval(
                    f"INSERT INTO {s}.meta (key, value) VALUES ($1, $2) "
                    "ON CONFLICT (key) DO NOTHING RETURNING true",
                    META_KEY,
                    log,
                )
                if inserted and version is not None:  # with the first record only
                    await conn.execute(
                        f"INSERT INTO {s}.meta (key, value) VALUES ($1, $2) "
                        "ON CONFLICT (key) DO NOTHING",
                        VERSION_KEY,
                        str(version),
                    )
                value = await conn.fetchval(f"SELECT value FROM {s}.meta WHERE key = $1", META_KEY)
        return str(value)

    async def built_by(self) -> int | None:
        with sink_errors():
            async with self._conn() as conn:
                try:
                    value = await conn.fetchval(
                        f'SELECT value FROM "{self.schema}".meta WHERE key = $1', VERSION_KEY
                    )
                except _MISSING:
                    return None
        return None if value is None else int(value)

    async def positions(self) -> dict[int, str]:
        with sink_errors():
            async with self._conn() as conn:
                try:
                    rows = await conn.fetch(
                        f'SELECT partition, entry_id FROM "{self.schema}".checkpoints'
                    )
                except _MISSING:
                    return {}
        return {int(r["partition"]): str(r["entry_id"]) for r in rows}


def meta_of(projection: Any) -> ViewMeta | None:
    """The meta record of a projection of ours (``None`` for one that keeps none)."""
    if isinstance(projection, ReadModelsProjection):
        return MongoMeta(projection.db, projection.collections)
    if isinstance(projection, AuditProjection | WarehouseProjection):
        return PostgresMeta(projection.pool, projection.schema)
    return None


Holds = Callable[[dict[int, str]], Awaitable[bool]]
"""``holds(positions)``: are these entries (partition → entry id) in this log?"""


async def built_version(meta: ViewMeta) -> int | None:
    """The projection version that built this view version: as recorded, or
    :data:`~projections.base.DEFAULT_VERSION` for one built before versions were recorded
    (it records a log or holds checkpoints); ``None`` when nothing is built yet."""
    version = await meta.built_by()
    if version is not None:
        return version
    if await meta.recorded() is not None or await meta.positions():
        return DEFAULT_VERSION
    return None


async def bind(
    view: str,
    meta: ViewMeta,
    log: str,
    holds: Holds,
    *,
    claim: bool,
    version: int | None = None,
) -> str | None:
    """Check that ``meta``'s version of ``view`` belongs to ``log``; record it if it is new
    (with ``version``, the projection version that builds it, when it is still empty).

    Returns the identity now recorded (``None`` when nothing is and ``claim`` is false).
    Raises :class:`ForeignView` for a version recorded for another log, or an unrecorded
    one whose checkpoints this log does not hold.
    """
    recorded = await meta.recorded()
    if recorded is None:
        positions = await meta.positions()
        if not await holds(positions):
            raise ForeignView(view, meta.where, None, log)
        if not claim:
            return None
        # A view from before identities holds entries already: built by an unknown version.
        recorded = await meta.record(log, None if positions else version)
    if recorded != log:
        raise ForeignView(view, meta.where, recorded, log)
    return recorded
