"""The read side's connections (MongoDB with Beanie, one asyncpg pool) and its lifespan step.

Startup does no I/O (the clients connect on first use): the write side must come up even
while a view store is down, and a query then answers 503. The views' collections, indexes
and tables are created by the projections' ``setup`` (the projector runs it on start).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pymongo.errors
import structlog
from beanie import init_beanie
from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.settings import Settings
from projections.audit import AuditProjection
from projections.base import SinkUnavailable
from projections.read_models import DOCUMENTS, ReadModelsProjection
from projections.warehouse import WarehouseProjection

log = structlog.get_logger("app.queries")


@dataclass
class ReadSide:
    """What the query handlers read. The projections are used for their checkpoints."""

    db: AsyncDatabase[Any]
    pool: asyncpg.Pool
    read_models: ReadModelsProjection
    audit: AuditProjection
    warehouse: WarehouseProjection
    _beanie_ready: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def ready(self) -> ReadSide:
        """Bind the Beanie documents on first use (``init_beanie`` talks to the server)."""
        if not self._beanie_ready:
            async with self._lock:
                if not self._beanie_ready:
                    with store_errors():
                        await init_beanie(
                            database=self.db, document_models=DOCUMENTS, skip_indexes=True
                        )
                    self._beanie_ready = True
        return self


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
    """A view store that is down is a 503, not a 500."""
    try:
        yield
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
