"""Bad input never reaches the log: every case is a 4xx problem+json and appends nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from app.main import create_app
from app.settings import MongoSettings, PostgresSettings
from events.store import EventStore
from tests.conftest import PG_ADMIN_DSN
from tests.e2e import (
    PASSWORD,
    admin,
    api_fixture,  # noqa: F401
    api_settings,
    assert_problem,
    create_product,
    customer,
)

HUGE = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
LINE = {"product_id": "p-1", "quantity": 1}

# (who, method, path, body (dict, or raw bytes), status, field at fault or None)
CASES: list[tuple[str, str, str, Any, int, str | None]] = [
    ("anon", "POST", "/accounts", b"{", 400, None),
    ("anon", "POST", "/accounts", b"", 400, None),
    ("anon", "POST", "/accounts", b"[1, 2]", 400, None),
    (
        "anon",
        "POST",
        "/accounts",
        {"name": 7, "email": "a@b.co", "password": PASSWORD},
        400,
        "name",
    ),
    ("anon", "POST", "/accounts", {"email": "a@b.co", "password": PASSWORD}, 400, "name"),
    (
        "anon",
        "POST",
        "/accounts",
        {"name": "A", "email": "a@b.co", "password": PASSWORD, "role": "admin"},
        400,
        "role",
    ),
    (
        "anon",
        "POST",
        "/accounts",
        {"name": "A", "email": "not-an-email", "password": PASSWORD},
        400,
        "email",
    ),
    (
        "anon",
        "POST",
        "/accounts",
        {"name": "A", "email": "a@b.co", "password": "short"},
        400,
        "password",
    ),
    (
        "anon",
        "POST",
        "/accounts",
        {"name": "", "email": "a@b.co", "password": PASSWORD},
        400,
        "name",
    ),
    ("anon", "POST", "/accounts", HUGE, 413, None),
    ("anon", "POST", "/auth/login", {"email": "a@b.co"}, 400, "password"),
    (
        "anon",
        "POST",
        "/criarConta",
        {"nome": "A", "email": "a@b.co", "password": PASSWORD},
        400,
        "password",
    ),
    ("anon", "POST", "/login", {"email": "a@b.co", "senha": PASSWORD, "x": 1}, 400, "x"),
    ("customer", "POST", "/orders", b"{not json", 400, None),
    ("customer", "POST", "/orders", {"lines": []}, 400, "lines"),
    ("customer", "POST", "/orders", {"lines": [LINE] * 101}, 400, "lines"),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": "p-1", "quantity": -1}]},
        400,
        "lines[0].quantity",
    ),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": "p-1", "quantity": 0}]},
        400,
        "lines[0].quantity",
    ),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": "p-1", "quantity": 1001}]},
        400,
        "lines[0].quantity",
    ),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": "p-1", "quantity": "2"}]},
        400,
        "lines[0].quantity",
    ),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": 12, "quantity": 1}]},
        400,
        "lines[0].product_id",
    ),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": "p-1", "quantity": 1, "price": 1}]},
        400,
        "lines[0].price",
    ),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": "p", "quantity": True}]},
        400,
        "lines[0].quantity",
    ),
    ("customer", "POST", "/orders", {"lines": [{"quantity": 1}]}, 400, "lines[0].product_id"),
    ("customer", "POST", "/orders", {"lines": [LINE], "total": 1}, 400, "total"),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": "no-such", "quantity": 1}]},
        422,
        "lines[0].product_id",
    ),
    (
        "customer",
        "POST",
        "/faturarPedido",
        {"usuario_id": 5, "produtos": [{"id": 1, "quantidade": 1}]},
        400,
        "usuario_id",
    ),
    (
        "customer",
        "POST",
        "/faturarPedido",
        {"usuario_id": "u", "produtos": [{"id": 1, "quantidade": -3}]},
        400,
        "produtos[0].quantidade",
    ),
    (
        "customer",
        "POST",
        "/faturarPedido",
        {"usuario_id": "u", "produtos": [{"id": -1, "quantidade": 1}]},
        400,
        "produtos[0].id",
    ),
    (
        "customer",
        "POST",
        "/faturarPedido",
        {"usuario_id": "u", "produtos": [{"id": 1.5, "quantidade": 1}]},
        400,
        "produtos[0].id",
    ),
    ("customer", "POST", "/orders", HUGE, 413, None),
    ("admin", "POST", "/products", {"sku": "S", "name": "n", "price": -5}, 400, "price"),
    ("admin", "POST", "/products", {"sku": "S", "name": "n", "price": 10.5}, 400, "price"),
    (
        "admin",
        "POST",
        "/products",
        {"sku": "S", "name": "n", "price": 1, "currency": "real"},
        400,
        "currency",
    ),
    (
        "admin",
        "POST",
        "/products",
        {"sku": "S", "name": "n", "price": 1, "stock": -1},
        400,
        "stock",
    ),
    ("admin", "POST", "/products", {"sku": "S", "name": "n", "price": "1"}, 400, "price"),
    ("admin", "PATCH", "/products/{product}", {}, 422, None),
    # PostgreSQL text cannot hold NUL: refused at the door, not by a view's sink later.
    ("admin", "POST", "/products", {"sku": "S", "name": "Café\x00moído", "price": 1}, 400, "name"),
    ("admin", "PATCH", "/products/{product}", {"description": "a\x00b"}, 400, "description"),
    ("admin", "POST", "/products/{product}/stock", {"delta": 1, "reason": "\x00"}, 400, "reason"),
    (
        "customer",
        "POST",
        "/orders",
        {"lines": [{"product_id": "p\x00", "quantity": 1}]},
        400,
        "lines[0].product_id",
    ),
    (
        "anon",
        "POST",
        "/accounts",
        {"name": "A\x00", "email": "a@b.co", "password": PASSWORD},
        400,
        "name",
    ),
    (
        "anon",
        "POST",
        "/criarConta",
        {"nome": "A", "email": "a\x00@b.co", "senha": PASSWORD},
        400,
        "email",
    ),
    ("admin", "PATCH", "/products/{product}", {"price": -1}, 400, "price"),
    ("admin", "PATCH", "/products/{product}", {"colour": "red"}, 400, "colour"),
    ("admin", "POST", "/products/{product}/stock", {"delta": "many"}, 400, "delta"),
    ("admin", "POST", "/products/{product}/stock", {"delta": 0}, 400, "delta"),
    ("admin", "POST", "/products/{product}/stock", {"delta": -11}, 409, "delta"),
]


@pytest.mark.parametrize(("who", "method", "path", "body", "status", "field"), CASES)
async def test_bad_input_is_a_problem_and_appends_nothing(
    api: AsyncTestClient[Any],
    store: EventStore,
    who: str,
    method: str,
    path: str,
    body: Any,
    status: int,
    field: str | None,
) -> None:
    headers: dict[str, str] = {}
    if who == "customer":
        headers = (await customer(api))[1]
    elif who == "admin":
        headers = await admin(api, store)
    product_id = await create_product(api, headers, stock=10) if "{product}" in path else ""
    before = await store.count()
    kwargs: dict[str, Any] = {"headers": {**headers, "content-type": "application/json"}}
    if isinstance(body, bytes):
        kwargs["content"] = body
    else:
        kwargs["json"] = body
    resp = await api.request(method, path.format(product=product_id), **kwargs)
    problem = assert_problem(resp, status)
    if field is not None:
        assert problem["field"] == field, problem
    assert await store.count() == before


async def test_an_unknown_field_is_named_in_invalid_params(api: AsyncTestClient[Any]) -> None:
    resp = await api.post(
        "/accounts", json={"name": "A", "email": "a@b.co", "password": PASSWORD, "is_admin": True}
    )
    problem = assert_problem(resp, 400, "validation-error")
    assert problem["invalid-params"][0]["name"] == "is_admin"
    assert "is_admin" in problem["detail"]


async def test_unknown_routes_and_methods_are_problems_too(api: AsyncTestClient[Any]) -> None:
    assert_problem(await api.get("/no/such/route"), 404)
    assert_problem(await api.put("/accounts"), 405)  # GET /accounts is the admin search now


async def test_every_response_carries_a_request_id(api: AsyncTestClient[Any]) -> None:
    mine = await api.get("/health", headers={"X-Request-ID": "trace-abc-123"})
    assert mine.headers["x-request-id"] == "trace-abc-123"
    made = await api.get("/health")
    assert len(made.headers["x-request-id"]) == 36
    garbage = await api.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert garbage.headers["x-request-id"] != "bad id\twith spaces"
    assert (await api.get("/nowhere")).headers["x-request-id"]


async def test_one_access_log_line_per_request(api: AsyncTestClient[Any]) -> None:
    with capture_logs() as logs:
        await api.post("/accounts", json={"nope": 1}, headers={"X-Request-ID": "rid-42"})
    [line] = [entry for entry in logs if entry["event"] == "request"]
    assert line["request_id"] == "rid-42"
    assert line["route"] == "/accounts"
    assert line["status"] == 400
    assert line["duration_ms"] >= 0


async def _sample(api: AsyncTestClient[Any], name: str, **labels: str) -> float:
    """The value of ``name`` with ``labels`` in ``/metrics`` (0 when absent)."""
    text = (await api.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_command_refused_for_want_of_a_token_is_logged_and_counted(
    api: AsyncTestClient[Any],
) -> None:
    """The 401 comes from the authentication layer, before the handler: it still gets its
    access line, and counts in the HTTP series and the command histogram."""
    http = {"method": "POST", "path": "/orders", "status_code": "401"}
    command = {"command": "billOrder", "outcome": "refused"}
    requests_before = await _sample(api, "streamshop_http_requests_total", **http)
    commands_before = await _sample(api, "streamshop_command_seconds_count", **command)
    with capture_logs() as logs:
        resp = await api.post("/orders", json={"lines": [LINE]}, headers={"X-Request-ID": "r-401"})
    assert_problem(resp, 401)
    assert resp.headers["x-request-id"] == "r-401"
    [line] = [entry for entry in logs if entry["event"] == "request"]
    assert (line["request_id"], line["route"], line["status"]) == ("r-401", "/orders", 401)
    requests = await _sample(api, "streamshop_http_requests_total", **http)
    assert requests == requests_before + 1
    commands = await _sample(api, "streamshop_command_seconds_count", **command)
    assert commands == commands_before + 1


async def test_health_and_ready(
    prefix: str, store: EventStore, mongo_url: str, mongo_db_name: str
) -> None:
    """``/ready`` also probes MongoDB and PostgreSQL, so this app is given reachable ones."""
    settings = dataclasses.replace(
        api_settings(prefix),
        mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
        postgres=PostgresSettings(url=PG_ADMIN_DSN),
    )
    async with AsyncTestClient(app=create_app(settings)) as api:
        assert (await api.get("/health")).json() == {"status": "ok"}
        assert (await api.get("/ready")).json() == {"status": "ready"}
