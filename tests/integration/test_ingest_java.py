"""The Java producer example, compiled with javac and run against the real Redis while a
gateway (and, for the read side, a projector) runs: what a Java team publishes ends up
recorded, projected and billable; its invalid message ends up dead-lettered."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.commands import execute
from app.commands.categories import CreateCategory
from events.store import EventStore, Metadata
from tests.conftest import REDIS_URL
from tests.integration.test_ingest import drained, eventually
from workers.ingest import IngestGateway
from workers.legacy_feed import product_id_for

JAVA_DIR = Path(__file__).resolve().parents[2] / "examples" / "java-producer"
MAIN_CLASS = "dev.streamshop.producer.Producer"
SOURCE = "java-example"
PRODUCT_ID = "0192f0c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f"
CREATED_EVENT_ID = "0192f0c4-1b2a-7c3d-8e4f-000000000001"
INVALID_EVENT_ID = "0192f0c4-1b2a-7c3d-8e4f-000000000003"
LEGACY_ID = 4242
LEGACY_PRODUCT_ID = product_id_for(LEGACY_ID)
NAME = 'Caneca "Java" \u2615 300 ml'
DESCRIPTION = "Cerâmica, lava-louças.\nPasta: C:\\canecas\\java\t(azul) \x01 \U0001f600"

pytestmark = pytest.mark.skipif(shutil.which("javac") is None, reason="needs a JDK (javac)")


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="session")
def java_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example compiled once per run, with the flags ``run.sh`` uses."""
    out = tmp_path_factory.mktemp("java-producer")
    sources = sorted(str(p) for p in (JAVA_DIR / "src").rglob("*.java"))
    subprocess.run(
        [
            "javac",
            "--release",
            "17",
            "-encoding",
            "UTF-8",
            "-Xlint:all",
            "-Werror",
            "-d",
            str(out),
            *sources,
        ],
        check=True,
        timeout=120,
    )
    return out


async def run(*argv: str, env: dict[str, str] | None = None) -> str:
    """Run a process without blocking the loop (the gateway keeps reading meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, stderr.decode()
    return stdout.decode()


async def run_producer(classes: Path, prefix: str) -> str:
    return await run("java", "-cp", str(classes), MAIN_CLASS, REDIS_URL, prefix)


@pytest.fixture
async def gateway(redis_client: aioredis.Redis, store: EventStore) -> AsyncIterator[IngestGateway]:
    """A gateway that serves 'produtos' and discovers the example's stream by itself; the
    example's category exists (an unknown one would be refused)."""
    await execute(store, CreateCategory(slug="cozinha", name="Cozinha"), Metadata(actor="test"))
    gw = IngestGateway(
        redis_client, store, store.keys, discover_interval=0.2, block_ms=100, consumer="java-test"
    )
    task = asyncio.create_task(gw.run())
    yield gw
    gw.stop()
    await asyncio.wait_for(task, timeout=10)


async def processed(redis: aioredis.Redis, store: EventStore) -> None:
    await drained(redis, store.keys.ingest(SOURCE))
    await drained(redis, store.keys.ingest("produtos"))


async def test_run_sh_compiles_the_example_and_its_events_reach_the_write_side(
    gateway: IngestGateway,
    redis_client: aioredis.Redis,
    store: EventStore,
    prefix: str,
    tmp_path: Path,
) -> None:
    stdout = await run(
        "bash",
        str(JAVA_DIR / "run.sh"),
        env={"REDIS_URL": REDIS_URL, "STREAM_PREFIX": prefix, "OUT_DIR": str(tmp_path / "out")},
    )
    assert PRODUCT_ID in stdout
    assert LEGACY_PRODUCT_ID in stdout  # the Java uuid5 agrees with ours
    await processed(redis_client, store)

    state = await store.state(f"product:{PRODUCT_ID}")
    assert (state["v"], state["price"], state["stock"]) == ("2", "3990", "30")
    assert state["name"] == NAME
    [created] = [e async for e in store.read_all() if e.id == CREATED_EVENT_ID]
    assert created.event.description == DESCRIPTION  # every escape survived the trip
    assert created.source == f"ingest:{SOURCE}"

    legacy = await store.state(f"product:{LEGACY_PRODUCT_ID}")
    assert (legacy["price"], legacy["stock"], legacy["name"]) == ("2990", "12", "Café torrado 500g")
    assert await store.owner_of("legacy_product", str(LEGACY_ID)) == f"product:{LEGACY_PRODUCT_ID}"


async def test_the_examples_retried_event_is_recorded_once(
    gateway: IngestGateway,
    redis_client: aioredis.Redis,
    store: EventStore,
    prefix: str,
    java_classes: Path,
) -> None:
    await run_producer(java_classes, prefix)
    await processed(redis_client, store)
    assert await redis_client.xlen(store.keys.ingest(SOURCE)) == 4  # created twice, stock, invalid
    assert len([e async for e in store.read_all() if e.id == CREATED_EVENT_ID]) == 1
    assert gateway.stats.duplicates == 1

    before = {e.id async for e in store.read_all()}
    await run_producer(java_classes, prefix)  # the whole run again: no new stock, no new product
    await processed(redis_client, store)
    new = [e async for e in store.read_all() if e.id not in before]
    # The write side keeps no description, so the re-sent legacy snapshot may re-state it
    # (docs/producers.md); nothing else is recorded again.
    assert [e.type for e in new] in ([], ["ProductUpdated"])
    for event in new:
        assert event.event.product_id == LEGACY_PRODUCT_ID
        assert (event.event.name, event.event.price) == (None, None)
    assert (await store.state(f"product:{PRODUCT_ID}"))["stock"] == "30"
    assert (await store.state(f"product:{LEGACY_PRODUCT_ID}"))["stock"] == "12"


async def test_the_examples_invalid_message_is_dead_lettered_naming_the_price(
    gateway: IngestGateway,
    redis_client: aioredis.Redis,
    store: EventStore,
    prefix: str,
    java_classes: Path,
) -> None:
    await run_producer(java_classes, prefix)
    await processed(redis_client, store)
    rows = await redis_client.xrange(store.keys.ingest_dlq(SOURCE))
    [letter] = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]
    assert letter["dlq.field"] == "data.price"
    assert "$.price" in letter["dlq.error"]
    assert letter["dlq.event_id"] == INVALID_EVENT_ID
    assert letter["id"] == INVALID_EVENT_ID  # the original entry, field for field
    assert await redis_client.xlen(store.keys.ingest_dlq("produtos")) == 0
    assert not gateway.stopping


# -- the read side and HTTP, when those parts are present ------------------------------


@pytest.mark.skipif(
    not (_available("workers.runner") and _available("projections.read_models")),
    reason="projector runtime or read models not present",
)
async def test_the_examples_products_reach_the_read_model(
    gateway: IngestGateway,
    redis_client: aioredis.Redis,
    store: EventStore,
    prefix: str,
    java_classes: Path,
    mongo_url: str,
    mongo_db_name: str,
) -> None:
    from pymongo import AsyncMongoClient

    from projections.read_models import ReadModelsProjection
    from workers.runner import ProjectorRunner

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    db = mongo[mongo_db_name]
    projection = ReadModelsProjection(db)
    await projection.setup()
    runner = ProjectorRunner(
        redis_client,
        store.keys,
        [projection],
        consumer=f"java-{uuid.uuid4().hex[:6]}",
        block_ms=100,
    )
    task = asyncio.create_task(runner.run())
    try:
        await run_producer(java_classes, prefix)
        await processed(redis_client, store)

        async def projected() -> list[dict[str, Any]] | None:
            docs = await db.products.find({}).sort("_id", 1).to_list(None)
            stocks = {doc["_id"]: doc.get("stock") for doc in docs}
            if stocks == {PRODUCT_ID: 30, LEGACY_PRODUCT_ID: 12}:
                return docs
            return None

        docs = {doc["_id"]: doc for doc in await eventually(projected, within=30)}
        assert (docs[PRODUCT_ID]["name"], docs[PRODUCT_ID]["price"]) == (NAME, 3990)
        assert docs[PRODUCT_ID]["description"] == DESCRIPTION
        assert (docs[LEGACY_PRODUCT_ID]["price"], docs[LEGACY_PRODUCT_ID]["sku"]) == (
            2990,
            "LEGACY-4242",
        )
    finally:
        runner.stop()
        await asyncio.wait_for(task, timeout=30)
        await mongo.drop_database(mongo_db_name)
        await mongo.close()


@pytest.mark.skipif(not _available("app.main"), reason="the HTTP API is not present")
async def test_the_examples_products_are_billable_over_http(
    gateway: IngestGateway,
    redis_client: aioredis.Redis,
    store: EventStore,
    prefix: str,
    java_classes: Path,
) -> None:
    from litestar.testing import AsyncTestClient

    from app.main import create_app
    from app.settings import RedisSettings, Settings

    await run_producer(java_classes, prefix)
    await processed(redis_client, store)

    settings = Settings(
        redis=RedisSettings(url=REDIS_URL, prefix=prefix, partitions=store.keys.partitions),
        dev_mode=True,
        log_format="console",
    )
    email, password = f"{uuid.uuid4().hex[:10]}@example.com", "correct horse battery"
    async with AsyncTestClient(app=create_app(settings)) as client:
        signup = await client.post(
            "/accounts", json={"name": "Ana", "email": email, "password": password}
        )
        assert signup.status_code == 201, signup.text
        login = await client.post("/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}

        order = await client.post(
            "/orders", json={"lines": [{"product_id": PRODUCT_ID, "quantity": 2}]}, headers=auth
        )
        assert order.status_code == 201, order.text
        assert order.json()["total"] == 7980

        legado = await client.post("/login", json={"email": email, "senha": password})
        assert legado.status_code == 200, legado.text
        body = legado.json()
        pedido = await client.post(
            "/faturarPedido",
            json={
                "usuario_id": body["usuario_id"],
                "produtos": [{"id": LEGACY_ID, "quantidade": 3}],
            },
            headers={"Authorization": f"Bearer {body['token']}"},
        )
        assert pedido.status_code == 201, pedido.text
        assert pedido.json()["total"] == 3 * 2990

    assert (await store.state(f"product:{PRODUCT_ID}"))["stock"] == "28"
    assert (await store.state(f"product:{LEGACY_PRODUCT_ID}"))["stock"] == "9"
