"""A read-models projector killed in the middle of its batch's transaction does not stall
the view: the next writer ends the transaction the dead one left open on the server.

A ``kill -9`` leaves the transaction open on SecantusDB, holding the documents it wrote
(the checkpoints among them), and every later write to them waits on a write conflict
until the server reaps it: measured ~155 s in ``make faults`` before the successor could
write, where MongoDB's ``transactionLifetimeLimitSeconds`` is 60 s. With the fix the
successor kills the dead writer's recorded session before it writes. The bound below is
not a performance figure: it sits far below any server's reaping, and far above what a
successor needs (its lease wait and a small backlog), so only a stall fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from app.settings import MongoSettings, PostgresSettings, RedisSettings, Settings
from events.store import EventStore
from tests.conftest import REDIS_URL
from tests.integration.test_rebuild_support import Shop, eventually
from tests.integration.test_sink_mongo_crash import (
    _kill,
    at_heads,
    read_model_checkpoints,
    start_projector,
)
from workers.verify import verify_view

CATCH_UP_S = 100.0
"""From the successor's start to the log's heads. Without the fence the successor's write
retried on the dead transaction's write conflicts for ~150 s (the server reaps nothing while
no transaction command runs), which exceeds it; with it the successor is there in ~20-30 s,
and a loaded machine (a full suite beside other jobs) needed more than 45."""
ATTEMPTS = 8
WRITE_CONFLICT = 112
VIEW = ("accounts", "products", "orders", "carts", "categories", "checkpoints")


@pytest.fixture
async def settings(
    prefix: str, store: EventStore, mongo_url: str, pg_dsn: str
) -> AsyncIterator[Settings]:
    database = f"deadtxn_{uuid.uuid4().hex[:8]}"
    yield Settings(
        redis=RedisSettings(url=REDIS_URL, prefix=prefix, partitions=store.keys.partitions),
        mongo=MongoSettings(url=mongo_url, database=database),
        postgres=PostgresSettings(url=pg_dsn),
        log_format="json",
    )
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    with contextlib.suppress(Exception):
        # A transaction a killed projector left open would hold the drop up (nothing else
        # runs on the server between tests).
        await client.admin.command("killAllSessions", [])
        await client.drop_database(database)
    await client.close()


async def held_by_an_open_transaction(settings: Settings) -> bool:
    """Whether some document of the view is written by a transaction still open (nobody
    else writes now): a transaction of ours that touches every document meets a write
    conflict at once (inside a transaction it is not retried), and is then aborted."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    db = client[settings.mongo.database]
    try:
        async with client.start_session() as session:
            for name in VIEW:
                await session.start_transaction()
                try:
                    await db[name].update_many({}, {"$set": {"probe": 1}}, session=session)
                except OperationFailure as exc:
                    if exc.code == WRITE_CONFLICT:
                        return True
                    raise
                finally:
                    with contextlib.suppress(OperationFailure):
                        await session.abort_transaction()
        return False
    finally:
        await client.close()


async def test_a_projector_killed_mid_transaction_does_not_stall_its_successor(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=8, products=12)
    stop = asyncio.Event()
    load = asyncio.gather(*(shop.run_until(stop, pause=0) for _ in range(3)))
    projectors = []
    try:
        for attempt in range(ATTEMPTS):
            projector = start_projector(settings, tmp_path, f"dead-txn-{attempt}")
            projectors.append(projector)
            await projector.started()
            seen = await read_model_checkpoints(settings)

            async def moved(seen: dict[int, str] = seen) -> bool:
                return await read_model_checkpoints(settings) != seen

            # Right after the view moved, the next batch's transaction is under way.
            await eventually(moved, within=60, what="the view to move")
            projector.kill9()
            if await held_by_an_open_transaction(settings):
                break
        else:
            pytest.fail(f"no kill of {ATTEMPTS} left a transaction open")
        stop.set()
        await load

        successor = start_projector(settings, tmp_path, "successor")
        projectors.append(successor)
        await successor.started()
        await at_heads(settings, store, within=CATCH_UP_S)
        report = await verify_view(settings, "read_models", show=5)
        assert report.ok, "\n".join(str(d) for d in report.differences)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await load
        for projector in projectors:
            _kill(projector)
