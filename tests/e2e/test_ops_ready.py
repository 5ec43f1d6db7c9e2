"""``/ready`` knows the stores and the projections' lag; ``/health`` stays liveness."""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar.testing import AsyncTestClient

from app.main import create_app
from app.settings import PostgresSettings
from tests.conftest import free_port
from tests.e2e import admin, assert_problem, create_product, customer
from tests.e2e.test_ops_support import (  # noqa: F401
    Ops,
    bill,
    caught_up,
    ops_fixture,
    pg_database_fixture,
)
from tests.support.projectors import eventually


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


async def _status_is(ops: Ops, status: int) -> bool:
    return (await ops.api.get("/ready")).status_code == status
