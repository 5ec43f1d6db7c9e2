"""The query API as it runs in production (uvicorn, its own process) with real view stores:
a schemathesis run over the query routes finds no 5xx and no response breaking its schema."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.auth import build_jwt_auth, issue_token
from app.settings import MongoSettings, PostgresSettings
from events.store import EventStore
from scripts.servers import free_port, wait_for_port
from tests.conftest import REDIS_URL
from tests.e2e import TEST_JWT_SECRET, api_settings
from tests.e2e.test_views_support import VIEWS, pg_database_fixture  # noqa: F401
from tests.support.fuzz import fuzz_operations
from workers.registry import open_projections

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

QUERY_OPERATIONS = {
    "getMyAccount",
    "listMyOrders",
    "getOrder",
    "getAccountCart",
    "listProducts",
    "getProduct",
    "salesPerPeriod",
    "topProducts",
    "loginsPerDay",
    "funnelPerPeriod",
    "listAudit",
    "verifyAudit",
}


@pytest.fixture
async def live_url(
    prefix: str, store: EventStore, mongo_url: str, mongo_db_name: str, pg_database: str
) -> AsyncIterator[str]:
    """uvicorn serving the app on views whose tables and indexes exist (projections' setup)."""
    view_settings = dataclasses.replace(
        api_settings(prefix),
        mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
        postgres=PostgresSettings(url=pg_database),
    )
    async with open_projections(view_settings, VIEWS):
        pass
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "STREAM_PREFIX": prefix,
        "STREAM_PARTITIONS": "4",
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db_name,
        "DATABASE_URL": pg_database,
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - a server for the whole test, not awaited
        [str(BIN / "uvicorn"), "--factory", "app.main:create_app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_schemathesis_finds_no_server_error_on_the_query_routes(live_url: str, prefix: str) -> None:
    token = issue_token(build_jwt_auth(api_settings(prefix)), str(uuid.uuid4()), "admin", 600)
    headers = {"Authorization": f"Bearer {token}"}
    fuzz_operations(live_url, QUERY_OPERATIONS, headers, max_examples=10)
