"""Shared set-up for the operations tests (no tests here): the real app with its read side,
and real ``streamshop project`` processes that a test starts and stops to make lag.

A module imports ``ops_fixture`` and ``pg_database_fixture`` to use the ``ops`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import MongoSettings, PostgresSettings, Settings
from events.store import EventStore
from scripts.servers import free_port, wait_for_port
from tests.conftest import REDIS_URL
from tests.e2e import TEST_JWT_SECRET, api_settings
from tests.e2e.test_views_support import pg_database_fixture  # noqa: F401
from tests.support.projectors import Projector, eventually

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VIEWS = ("read_models", "audit", "warehouse")
READY_MAX_LAG = 1.0


def spawn_api(prefix: str, partitions: int, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    """``uvicorn --factory app.main:create_app`` in its own process, on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "uvicorn"), "--factory", "app.main:create_app", "--port", str(port)],
        cwd=ROOT,
        env={
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "STREAM_PREFIX": prefix,
            "STREAM_PARTITIONS": str(partitions),
            "JWT_SECRET": TEST_JWT_SECRET,
            "LOG_FORMAT": "json",
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_KIB": "1024",
            "ARGON2_PARALLELISM": "1",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def stop_api(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def live_api(prefix: str, partitions: int, **env: str) -> Iterator[str]:
    """The API in its own process (an SSE response never ends): yields its base URL."""
    proc, port = spawn_api(prefix, partitions, **env)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_api(proc)


@contextlib.asynccontextmanager
async def live_api_async(prefix: str, partitions: int, **env: str) -> AsyncIterator[str]:
    """:func:`live_api` waiting off the loop, for a test whose loop serves a TCP proxy."""
    proc, port = spawn_api(prefix, partitions, **env)
    try:
        await asyncio.to_thread(wait_for_port, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        await asyncio.to_thread(stop_api, proc)


@dataclasses.dataclass
class Ops:
    api: AsyncTestClient[Any]
    settings: Settings
    store: EventStore
    tmp: Path
    projectors: list[Projector] = dataclasses.field(default_factory=list)

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "REDIS_URL": s.redis.url,
            "STREAM_PREFIX": s.redis.prefix,
            "STREAM_PARTITIONS": str(s.redis.partitions),
            "MONGO_URL": s.mongo.url,
            "MONGO_DB": s.mongo.database,
            "DATABASE_URL": s.postgres.url,
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }

    def spawn_projector(self, extra_env: dict[str, str] | None = None) -> Projector:
        """A real ``streamshop project`` of the three views (not yet waited for)."""
        consumer = f"ops-{uuid.uuid4().hex[:6]}"
        log_path = self.tmp / f"{consumer}.log"
        args = [*VIEWS, "--consumer", consumer, "--block-ms", "100", "--lease-ms", "3000"]
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "project", *args],
                cwd=ROOT,
                env={**self.env(), **(extra_env or {})},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        projector = Projector(proc, consumer, log_path)
        self.projectors.append(projector)
        return projector

    async def start_projector(self, extra_env: dict[str, str] | None = None) -> Projector:
        projector = self.spawn_projector(extra_env)
        await projector.started()
        return projector

    async def stop_projector(self, projector: Projector) -> None:
        projector.terminate()
        assert await projector.wait(30) == 0, projector.log_path.read_text()

    async def scrape(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """``/metrics`` parsed: sample name → [(labels, value)]."""
        resp = await self.api.get("/metrics")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/plain")
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(resp.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return samples

    async def lag_seconds(self, projection: str) -> float:
        return value(
            await self.scrape(), "streamshop_projection_lag_seconds", projection=projection
        )


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    """The one sample of ``name`` with ``labels`` (a failure names what was there)."""
    found = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def total(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


async def caught_up(ops: Ops) -> None:
    """Every view's lag is 0 in entries and in seconds."""

    async def check() -> bool:
        samples = await ops.scrape()
        lags = samples.get("streamshop_projection_lag_seconds", [])
        if {lab["projection"] for lab, _ in lags} < set(VIEWS):
            return False
        behind = total(samples, "streamshop_projection_lag_events")
        return behind == 0 and all(v == 0 for _, v in lags)

    await eventually(check, 90, "the projectors to catch up")


@pytest.fixture(name="ops")
async def ops_fixture(
    prefix: str,
    store: EventStore,
    mongo_url: str,
    mongo_db_name: str,
    pg_database: str,
    tmp_path: Path,
) -> AsyncIterator[Ops]:
    """The app on real stores, with a short ``READY_MAX_LAG_SECONDS`` (1 s)."""
    settings = dataclasses.replace(
        api_settings(prefix),
        mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
        postgres=PostgresSettings(url=pg_database),
        ready_max_lag_seconds=READY_MAX_LAG,
    )
    ops: Ops | None = None
    try:
        async with AsyncTestClient(app=create_app(settings)) as api:
            ops = Ops(api=api, settings=settings, store=store, tmp=tmp_path)
            yield ops
    finally:
        for projector in ops.projectors if ops else []:
            if projector.proc.poll() is None:
                projector.proc.kill()
                projector.proc.wait(timeout=10)


async def bill(ops: Ops, headers: dict[str, str], product_id: str, quantity: int = 1) -> str:
    resp = await ops.api.post(
        "/orders",
        json={"lines": [{"product_id": product_id, "quantity": quantity}]},
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["order_id"])
