"""Factory the projector runtime uses to build the read-models projection from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient

from events.personal import PersonalData, RedisKeyStore
from projections.read_models.projection import Collections, ReadModelsProjection


@asynccontextmanager
async def read_models(
    settings: Any, version: str | None = None
) -> AsyncIterator[ReadModelsProjection]:
    """``settings`` is ``app.settings.Settings`` (duck-typed: projections do not import app).

    ``version`` builds the view on collections suffixed ``_<version>`` (a rebuild's target).
    The accounts' keys are read from the key store (:mod:`events.personal`).
    """
    client: AsyncMongoClient = AsyncMongoClient(settings.mongo.url)
    # The settings' own client: on a Redis Cluster a plain client reaches the key hash only
    # while its node owns that slot (else MOVED, the view stalls as "sink unavailable").
    redis = settings.redis.connect()
    keys = settings.redis.keys
    personal = PersonalData(RedisKeyStore(redis, keys.prefix), keys.digest_secret)
    collections = Collections.suffixed(f"_{version}") if version else Collections()
    projection = ReadModelsProjection(client[settings.mongo.database], collections, personal)
    try:
        yield projection
    finally:
        await projection.close()
        await client.close()
        await redis.aclose()
