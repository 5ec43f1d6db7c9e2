"""Factory the projector runtime uses to build the read-models projection from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient

from projections.read_models.projection import ReadModelsProjection


@asynccontextmanager
async def read_models(settings: Any) -> AsyncIterator[ReadModelsProjection]:
    """``settings`` is ``app.settings.Settings`` (duck-typed: projections do not import app)."""
    client: AsyncMongoClient = AsyncMongoClient(settings.mongo.url)
    try:
        yield ReadModelsProjection(client[settings.mongo.database])
    finally:
        await client.close()
