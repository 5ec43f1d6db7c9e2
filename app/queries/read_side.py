"""The read side's connections (MongoDB with Beanie, one asyncpg pool) and its lifespan step.

Startup does no I/O (the clients connect on first use): the write side must come up even
while a view store is down, and a query then answers 503. The views' collections, indexes
and tables are created by the projections' ``setup`` (the projector runs it on start).

Each view may live in several versions (``streamshop rebuild``): every request first reads
the views' pointers in Redis (``{prefix}:view:{<name>}``, absent = the base names; the
layout is ``workers.views.ViewPointers``') and reads the version they name.

A version is read only once it is known to be built from this log
(:mod:`projections.identity`): one built from another log (two logs sharing a database)
is refused with 503 naming both logs, and ``/ready`` says so too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pymongo.errors
import structlog
from beanie import Document, init_beanie
from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.exceptions import RedisError

from app.settings import Settings
from events.identity import log_holds, log_identity
from events.keys import Keys
from projections.audit import AuditProjection
from projections.base import SinkUnavailable
from projections.identity import ForeignView, bind, meta_of
from projections.read_models import (
    DOCUMENTS,
    AccountView,
    CartView,
    CategoryView,
    Collections,
    OrderView,
    ProductView,
    ReadModelsProjection,
)
from projections.warehouse import WarehouseProjection

log = structlog.get_logger("app.queries")

UNBOUND_RECHECK_S = 1.0
"""How long a version that records no log yet (not built yet) is read before it is looked
at again; a version recorded for this log is checked once."""


@dataclass
class ReadSide:
    """What the query handlers read. The projections are used for their checkpoints."""

    db: AsyncDatabase[Any]
    pool: asyncpg.Pool
    read_models: ReadModelsProjection
    audit: AuditProjection
    warehouse: WarehouseProjection
    redis: Any = None
    """The app's Redis client, to read the view pointers (``None``: always the base names)."""
    prefix: str = "streamshop"
    keys: Keys | None = None
    """The log's key layout (default: ``prefix`` with the default partitions)."""
    _beanie_ready: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _versions: dict[str, str] = field(default_factory=dict)
    _log: str | None = None
    _bound: dict[tuple[str, str], float] = field(default_factory=dict)
    """(view, version) → until when it is taken as this log's (``inf``: recorded as such)."""

    async def ready(self) -> ReadSide:
        """Bind the Beanie documents on first use (``init_beanie`` talks to the server), then
        follow the view pointers."""
        if not self._beanie_ready:
            async with self._lock:
                if not self._beanie_ready:
                    with store_errors():
                        await init_beanie(
                            database=self.db, document_models=DOCUMENTS, skip_indexes=True
                        )
                    self._beanie_ready = True
        await self._follow_pointers()
        with store_errors():
            await self.check_logs()
        return self

    async def refusal(self) -> str | None:
        """Why a live view is refused (built from another log), or ``None``; for ``/ready``,
        where a view store that is down does not count (commands can still be served)."""
        try:
            await self.ready()
        except ServiceUnavailableException as exc:
            return str(exc.__cause__) if isinstance(exc.__cause__, ForeignView) else None
        return None

    async def check_logs(self) -> None:
        """Raise :class:`ForeignView` if a live version was built from another log.

        Reads only (the projector records a new version's log). A store that is down
        raises :class:`SinkUnavailable`.
        """
        if self.redis is None:
            return
        now = time.monotonic()
        views = {"read_models": self.read_models, "audit": self.audit, "warehouse": self.warehouse}
        pending = {
            name: projection
            for name, projection in views.items()
            if self._bound.get((name, self._versions.get(name, "")), 0.0) < now
        }
        if not pending:
            return
        keys = self.keys or Keys(prefix=self.prefix)

        async def holds(positions: dict[int, str]) -> bool:
            return await log_holds(self.redis, keys, positions)

        try:
            if self._log is None:
                self._log = await log_identity(self.redis, keys)
            for name, projection in pending.items():
                meta = meta_of(projection)
                if meta is None:
                    continue
                try:
                    recorded = await bind(name, meta, self._log, holds, claim=False)
                except ForeignView as exc:
                    log.warning("view_of_other_log_refused", view=name, error=str(exc))
                    raise
                until = float("inf") if recorded else now + UNBOUND_RECHECK_S
                self._bound[(name, self._versions.get(name, ""))] = until
        except RedisError as exc:
            raise SinkUnavailable(f"cannot read the log's identity: {exc}") from exc

    async def _follow_pointers(self) -> None:
        """Read the versions the pointers name; a rebuild's switch shows on the next request.
        If Redis cannot be read, keep serving the versions last seen."""
        if self.redis is None:
            return
        names = ("read_models", "audit", "warehouse")
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.get(Keys(prefix=self.prefix).view(name))
                raw = await pipe.execute()
        except RedisError as exc:
            log.warning("view_pointers_unreadable", error=str(exc))
            return
        versions = {
            n: (v.decode() if isinstance(v, bytes) else v or "")
            for n, v in zip(names, raw, strict=True)
        }
        if versions["read_models"] != self._versions.get("read_models", ""):
            v = versions["read_models"]
            self.read_models = ReadModelsProjection(
                self.db, Collections.suffixed(f"_{v}") if v else Collections()
            )
        if versions["audit"] != self._versions.get("audit", ""):
            v = versions["audit"]
            self.audit = AuditProjection(self.pool, f"audit_{v}" if v else "audit")
        if versions["warehouse"] != self._versions.get("warehouse", ""):
            v = versions["warehouse"]
            self.warehouse = WarehouseProjection(self.pool, f"dw_{v}" if v else "dw")
        self._versions = versions
        names_of = self.read_models.collections
        documents: tuple[tuple[type[Document], str], ...] = (
            (AccountView, names_of.accounts),
            (ProductView, names_of.products),
            (OrderView, names_of.orders),
            (CartView, names_of.carts),
            (CategoryView, names_of.categories),
        )
        for document, collection in documents:
            bound = document.get_pymongo_collection()
            if bound is None or bound.full_name != f"{self.db.name}.{collection}":
                document.set_collection(self.db[collection])
                document.set_collection_name(collection)


async def read_side(state: State) -> ReadSide:
    side: ReadSide = state.views["read_side"]
    return await side.ready()


@contextlib.asynccontextmanager
async def read_side_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Connect MongoDB (Beanie) and PostgreSQL; put a :class:`ReadSide` in ``state.views``."""
    settings: Settings = app.state.settings
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        settings.mongo.url, tz_aware=True, serverSelectionTimeoutMS=5000
    )
    pool: asyncpg.Pool | None = None
    try:
        db = client[settings.mongo.database]
        pool = await asyncpg.create_pool(settings.postgres.url, min_size=0, max_size=10)
        side = ReadSide(
            db=db,
            pool=pool,
            read_models=ReadModelsProjection(db),
            audit=AuditProjection(pool),
            warehouse=WarehouseProjection(pool),
            redis=getattr(getattr(app.state, "store", None), "redis", None),
            prefix=settings.redis.prefix,
            keys=settings.redis.keys,
        )
        app.state.views["read_side"] = side
        log.info("read_side_ready", mongo_db=settings.mongo.database)
        yield
    finally:
        app.state.views.pop("read_side", None)
        if pool is not None:
            await pool.close()
        await client.close()


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """A view store that is down is a 503, not a 500; so is a view of another log."""
    try:
        yield
    except ForeignView as exc:
        raise ServiceUnavailableException(str(exc)) from exc
    except asyncpg.UndefinedTableError as exc:
        log.warning("view_not_built", error=str(exc))
        raise ServiceUnavailableException(
            "the view is not built yet (is the projector running?)"
        ) from exc
    except (
        SinkUnavailable,
        pymongo.errors.ConnectionFailure,
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.InterfaceError,
        OSError,
    ) as exc:
        log.warning("view_store_unavailable", error=str(exc))
        raise ServiceUnavailableException("a view store is unavailable; retry shortly") from exc
