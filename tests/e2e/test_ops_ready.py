"""``/ready`` knows the stores and the projections' lag; ``/health`` stays liveness."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from app.main import create_app
from app.settings import PostgresSettings
from events.store import EventStore
from scripts.servers import free_port
from tests.conftest import PG_ADMIN_DSN, REDIS_URL
from tests.e2e import admin, assert_problem, create_product, customer
from tests.e2e.test_ops_support import (  # noqa: F401
    Ops,
    bill,
    caught_up,
    live_api_async,
    ops_fixture,
    pg_database_fixture,
)
from tests.support.projectors import eventually
from tests.support.tcp_proxy import TcpProxy


async def test_ready_turns_503_while_a_projection_falls_behind_and_200_after_it_catches_up(
    ops: Ops,
) -> None:
    admin_headers = await admin(ops.api, ops.store)
    product = await create_product(ops.api, admin_headers, stock=100)
    _, headers = await customer(ops.api)
    projector = await ops.start_projector()
    await caught_up(ops)
    assert (await ops.api.get("/ready")).status_code == 200
    await ops.stop_projector(projector)

    await bill(ops, headers, product)
    await eventually(lambda: _status_is(ops, 503), 30, "/ready to answer 503")
    body = assert_problem(await ops.api.get("/ready"), 503)
    assert "projection read_models is" in body["detail"], body
    assert (await ops.api.get("/health")).status_code == 200

    await ops.start_projector()
    await eventually(lambda: _status_is(ops, 200), 90, "/ready to answer 200 again")


async def test_ready_is_503_naming_postgresql_when_it_is_unreachable(ops: Ops) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    settings = dataclasses.replace(
        ops.settings, postgres=PostgresSettings(url=closed), ready_max_lag_seconds=0
    )
    api: AsyncTestClient[Any]
    async with AsyncTestClient(app=create_app(settings)) as api:
        body = assert_problem(await api.get("/ready"), 503)
        assert "PostgreSQL is unreachable" in body["detail"], body
        assert "MongoDB" not in body["detail"], body
        assert (await api.get("/health")).status_code == 200


async def test_ready_and_metrics_tell_redis_is_unreachable_and_recover_with_it(
    prefix: str, store: EventStore, mongo_url: str, mongo_db_name: str
) -> None:
    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.up()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db_name,
        "DATABASE_URL": PG_ADMIN_DSN,
    }
    try:
        async with live_api_async(prefix, store.keys.partitions, **env) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                assert (await client.get("/ready")).status_code == 200
                await proxy.down()
                body = assert_problem(await client.get("/ready"), 503)
                assert "Redis is unreachable" in body["detail"], body
                scraped = await client.get("/metrics")
                assert scraped.status_code == 200
                assert "streamshop_redis_up 0.0" in scraped.text
                assert "streamshop_http_requests_total" in scraped.text
                await proxy.up()

                async def ready_again() -> bool:
                    return (await client.get("/ready")).status_code == 200

                await eventually(ready_again, 30, "/ready after Redis is back")
                assert "streamshop_redis_up 1.0" in (await client.get("/metrics")).text
    finally:
        await proxy.down()


async def _status_is(ops: Ops, status: int) -> bool:
    return (await ops.api.get("/ready")).status_code == status
