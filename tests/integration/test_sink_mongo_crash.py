"""A crashed MongoDB-protocol server loses no read-model effect (issue 12, finding 1).

The server runs as ``make run`` runs it: ``secantusd-py`` on an on-disk data directory.
Under a steady order load (orders whose stock decrements land on products of other
partitions) it is killed with SIGKILL and restarted on the same directory and port; the
real projector process goes on, and afterwards the read models equal the fold of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.settings import MongoSettings, PostgresSettings, RedisSettings, Settings
from events.store import EventStore
from projections.read_models.documents import AccountView, OrderView, ProductView
from projections.read_models.projection import DURABLE
from scripts.servers import free_port, secantusd_command, wait_for_port
from tests.conftest import REDIS_URL
from tests.integration.test_rebuild_interrupted import ROOT, cli_env
from tests.integration.test_rebuild_support import Shop, eventually
from tests.support.projectors import Projector
from workers.progress import Progress
from workers.rebuild import RebuildOptions, rebuild_view
from workers.verify import verify_view
from workers.views import mongo_collections

KILLS = 4


class MongoServer:
    """One ``secantusd-py`` process on a data directory and port that outlive it."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            secantusd_command(self.data, self.port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=60)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def mongo_server(tmp_path: Path) -> Iterator[MongoServer]:
    server = MongoServer(tmp_path / "mongo")
    server.start()
    yield server
    server.kill9()  # the data directory goes with tmp_path; a clean stop would only be slower


@pytest.fixture
async def settings(
    prefix: str, store: EventStore, mongo_server: MongoServer, pg_dsn: str
) -> AsyncIterator[Settings]:
    yield Settings(
        redis=RedisSettings(url=REDIS_URL, prefix=prefix, partitions=store.keys.partitions),
        mongo=MongoSettings(url=mongo_server.url, database=f"crash_{uuid.uuid4().hex[:8]}"),
        postgres=PostgresSettings(url=pg_dsn),
        log_format="json",
    )


def start_projector(settings: Settings, tmp: Path, consumer: str) -> Projector:
    log_path = tmp / f"{consumer}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "workers.cli", "project", "read_models"),
                *("--consumer", consumer, "--batch", "50", "--block-ms", "200"),
                *("--lease-ms", "3000", "--backoff-max-ms", "500"),
            ],
            cwd=ROOT,
            env=cli_env(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Projector(proc, consumer, log_path)


async def read_model_checkpoints(settings: Settings) -> dict[int, str]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        settings.mongo.url, serverSelectionTimeoutMS=2000
    )
    try:
        docs = await client[settings.mongo.database]["checkpoints"].find({}).to_list(None)
        return {int(d["_id"]): str(d["entry_id"]) for d in docs}
    except PyMongoError:  # the server is restarting: not there yet
        return {}
    finally:
        await client.close()


async def orders_in_view(settings: Settings) -> int:
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        settings.mongo.url, serverSelectionTimeoutMS=2000
    )
    try:
        return int(await client[settings.mongo.database]["orders"].count_documents({}))
    finally:
        await client.close()


async def test_the_server_keeps_every_journaled_write_it_acknowledged(
    mongo_server: MongoServer,
) -> None:
    """What the read models rely on: a ``j: true`` write acknowledged before ``kill -9`` is
    there after the restart (a ``w: 1`` one may not be: measured, up to dozens lost)."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_server.url, retryWrites=False)
    counter = client.get_database("durability", write_concern=DURABLE)["counter"]
    acknowledged = 0
    try:
        await counter.insert_one({"_id": 1, "n": 0})

        async def write() -> None:
            nonlocal acknowledged
            while True:
                await counter.update_one({"_id": 1}, {"$inc": {"n": 1}})
                acknowledged += 1

        writer = asyncio.create_task(write())
        await eventually(_at(lambda: acknowledged, 200), within=60, what="journaled writes")
        mongo_server.kill9()
        with contextlib.suppress(PyMongoError):
            await writer
    finally:
        await client.close()
    mongo_server.start()
    client = AsyncMongoClient(mongo_server.url)
    try:
        doc = await client["durability"]["counter"].find_one({"_id": 1})
    finally:
        await client.close()
    assert doc is not None and doc["n"] >= acknowledged


def _at(value: Callable[[], int], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return value() >= n

    return check


async def test_kill9_of_the_mongo_server_under_load_loses_no_read_model_effect(
    settings: Settings, store: EventStore, mongo_server: MongoServer, tmp_path: Path
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=8, products=12)
    projector = start_projector(settings, tmp_path, "crash-read-models")
    stop = asyncio.Event()
    load = asyncio.gather(*(shop.run_until(stop, pause=0) for _ in range(3)))
    try:
        await projector.started()
        await eventually(
            lambda: _more_orders(settings, 100), within=120, what="the view to take orders"
        )
        for _ in range(KILLS):
            # Kill right after the view moved: writes are in flight, and those the server
            # acknowledged but still holds in its log buffer die with it.
            seen = await read_model_checkpoints(settings)

            async def moved(seen: dict[int, str] = seen) -> bool:
                return await read_model_checkpoints(settings) != seen

            await eventually(moved, within=60, what="the view to move")
            mongo_server.kill9()
            await asyncio.sleep(0.5)
            mongo_server.start()
            before = await orders_in_view(settings)
            await eventually(
                lambda b=before: _more_orders(settings, b + 100),
                within=120,
                what="the projector to write to the restarted server",
            )
        stop.set()
        await load
        await at_heads(settings, store)
        report = await verify_view(settings, "read_models", show=5)
        assert report.ok, "\n".join(str(d) for d in report.differences)
        assert projector.proc.poll() is None
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await load
        _kill(projector)


async def test_a_server_back_with_older_data_is_refed_from_the_views_own_checkpoint(
    settings: Settings, store: EventStore, mongo_server: MongoServer, tmp_path: Path
) -> None:
    """A server restored from a backup has lost writes it acknowledged long ago, with no
    error on the way: the projector notices the view's checkpoints went back and re-feeds
    every partition from them, though the consumer group has acknowledged it all."""
    shop = Shop(store)
    await shop.seed(accounts=6, products=8)
    projector = start_projector(settings, tmp_path, "restore-read-models")
    try:
        await projector.started()
        await shop.run(100)
        await at_heads(settings, store)
        mongo_server.kill9()
        backup = tmp_path / "backup"
        shutil.copytree(mongo_server.data, backup)
        mongo_server.start()

        await shop.run(150)
        await at_heads(settings, store)
        mongo_server.kill9()
        shutil.rmtree(mongo_server.data)
        shutil.copytree(backup, mongo_server.data)
        mongo_server.start()

        await shop.run(100)
        await at_heads(settings, store)
        report = await verify_view(settings, "read_models", show=5)
        assert report.ok, "\n".join(str(d) for d in report.differences)
        assert sum(line["replayed"] for line in projector.logs("partition_resynced")) > 0
    finally:
        _kill(projector)


class DownAtTheFlush(Progress):
    """Kills the server when the rebuild starts writing what it folded in memory, and starts
    it again ``down_for`` seconds later (in a thread: the rebuild's loop and its lock
    keep-alive go on)."""

    def __init__(self, server: MongoServer, down_for: float) -> None:
        super().__init__("read_models", enabled=False)
        self.server = server
        self.down_for = down_for
        self.restarted: asyncio.Future[None] | None = None

    def set_phase(self, phase: str, total: int | None = None) -> None:
        super().set_phase(phase, total)
        if phase == "writing" and self.restarted is None:
            self.server.kill9()

            async def restart() -> None:
                await asyncio.sleep(self.down_for)
                await asyncio.to_thread(self.server.start)

            self.restarted = asyncio.ensure_future(restart())


async def test_a_rebuild_whose_server_is_down_when_it_writes_ends_whole_and_indexed(
    settings: Settings, store: EventStore, mongo_server: MongoServer
) -> None:
    """The read models' rebuild folds the log in memory, then inserts the documents and
    builds the version's indexes. With the server killed at that moment and back 2 s later
    (the client gives up on finding a server after 0.3 s, so the flush fails and is retried
    as a sink outage), the rebuild waits it out, switches, and the view is the fold of the
    log, with the live path's indexes."""
    shop = Shop(store)
    await shop.seed(accounts=6, products=8)
    await shop.run(150)
    impatient = f"{mongo_server.url}/?serverSelectionTimeoutMS=300"
    settings = dataclasses.replace(
        settings, mongo=dataclasses.replace(settings.mongo, url=impatient)
    )
    progress = DownAtTheFlush(mongo_server, down_for=2.0)
    with structlog.testing.capture_logs() as logs:
        report = await rebuild_view(settings, "read_models", RebuildOptions(batch=50), progress)
    assert progress.restarted is not None and progress.restarted.done()
    assert any(line["event"] == "rebuild_sink_unavailable" for line in logs)
    verified = await verify_view(settings, "read_models", show=5)
    assert verified.ok, "\n".join(str(d) for d in verified.differences)
    collections = mongo_collections(report.version)
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
    try:
        db = client[settings.mongo.database]
        for name, indexes in (
            (collections.orders, OrderView.Settings.indexes),
            (collections.products, ProductView.Settings.indexes),
            (collections.accounts, AccountView.Settings.indexes),
        ):
            found = set(await db[name].index_information())
            assert found == {"_id_"} | {i.document["name"] for i in indexes}, name
    finally:
        await client.close()


async def at_heads(settings: Settings, store: EventStore, within: float = 240) -> None:
    """Wait until the read models' checkpoints are the log's heads."""
    heads = {p: h for p, h in (await store.heads()).items() if h is not None}

    async def caught_up() -> bool:
        return await read_model_checkpoints(settings) == heads

    await eventually(caught_up, within=within, what="the read models to reach the log's heads")


def _kill(projector: Projector) -> None:
    if projector.proc.poll() is None:
        projector.proc.kill()
        projector.proc.wait(timeout=10)


async def _more_orders(settings: Settings, n: int) -> bool:
    try:
        return await orders_in_view(settings) >= n
    except PyMongoError:  # the server is restarting
        return False
