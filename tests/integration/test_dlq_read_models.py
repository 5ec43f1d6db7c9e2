"""Sequenced dead letters in the read models: effects MongoDB rejected for a while land
exactly once with ``dlq retry``, though the checkpoint and the stock watermarks moved past
them and part of each failed order (its order document, its other product) had landed."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from app.settings import Settings
from events.store import EventStore
from tests.integration.test_rebuild_support import settings_fixture  # noqa: F401
from tests.support.dlq import Sink, parked_sequences_are_redriven_and_land


async def test_rejected_product_writes_land_once_after_retry_and_verify_passes(
    settings: Settings, store: EventStore
) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    db = client[settings.mongo.database]

    async def reject(product_id: str) -> None:
        # A real rejection by the server (DocumentValidationFailure, code 121): every
        # write to this product's document, its own events and the stock orders take.
        await db.command("collMod", "products", validator={"_id": {"$ne": product_id}})

    async def accept() -> None:
        await db.command("collMod", "products", validator={})

    async def landed(orders: list[str]) -> set[str]:
        docs = await db["orders"].find({"_id": {"$in": orders}}, {"_id": 1}).to_list(None)
        return {doc["_id"] for doc in docs}

    try:
        await parked_sequences_are_redriven_and_land(
            settings, store, "read_models", Sink(reject, accept, landed, atomic=False)
        )
    finally:
        await client.close()
