"""Billing over HTTP: prices from the catalog, stock taken atomically, idempotent retries."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient

from events.store import EventStore
from tests.e2e import (
    admin,
    api_fixture,  # noqa: F401
    assert_problem,
    create_product,
    customer,
    events_of_type,
)
from tests.support.cluster import single_and_cluster

pytestmark = single_and_cluster


async def test_billing_prices_lines_from_the_catalog(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, name="Caneca", price=2590, stock=5)
    tee = await create_product(api, boss, name="Camiseta", price=4990, stock=5)
    account_id, headers = await customer(api)
    resp = await api.post(
        "/orders",
        json={"lines": [{"product_id": mug, "quantity": 2}, {"product_id": tee, "quantity": 1}]},
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"order_id", "lines", "total", "currency", "position"}
    assert body["lines"] == [
        {
            "product_id": mug,
            "name": "Caneca",
            "quantity": 2,
            "unit_price": 2590,
            "line_total": 5180,
        },
        {
            "product_id": tee,
            "name": "Camiseta",
            "quantity": 1,
            "unit_price": 4990,
            "line_total": 4990,
        },
    ]
    assert body["total"] == 10170
    assert body["currency"] == "BRL"
    [billed] = await events_of_type(store, "OrderBilled")
    assert billed.event.order_id == body["order_id"]
    assert billed.event.account_id == account_id
    assert billed.event.total == 10170
    assert (await store.state(f"product:{mug}"))["stock"] == "3"


async def test_twenty_parallel_orders_on_stock_ten_bill_exactly_ten(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=10)
    _, headers = await customer(api)
    responses = await asyncio.gather(
        *(
            api.post(
                "/orders",
                json={"lines": [{"product_id": product_id, "quantity": 1}]},
                headers=headers,
            )
            for _ in range(20)
        )
    )
    assert sorted(r.status_code for r in responses) == [201] * 10 + [409] * 10
    for refused in (r for r in responses if r.status_code == 409):
        assert assert_problem(refused, 409, "insufficient-stock")["product_id"] == product_id
    assert (await store.state(f"product:{product_id}"))["stock"] == "0"
    assert len(await events_of_type(store, "OrderBilled")) == 10


async def test_unknown_product_is_a_422_naming_the_line(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss)
    _, headers = await customer(api)
    before = await store.count()
    resp = await api.post(
        "/orders",
        json={
            "lines": [
                {"product_id": product_id, "quantity": 1},
                {"product_id": "no-such-product", "quantity": 1},
            ]
        },
        headers=headers,
    )
    body = assert_problem(resp, 422, "unknown-product")
    assert body["field"] == "lines[1].product_id"
    assert body["line"] == 1
    assert await store.count() == before


async def test_a_deleted_product_cannot_be_billed(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss)
    assert (await api.delete(f"/products/{product_id}", headers=boss)).status_code == 200
    _, headers = await customer(api)
    resp = await api.post(
        "/orders", json={"lines": [{"product_id": product_id, "quantity": 1}]}, headers=headers
    )
    assert assert_problem(resp, 422, "unknown-product")["field"] == "lines[0].product_id"


async def test_insufficient_stock_names_the_product(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=2)
    _, headers = await customer(api)
    resp = await api.post(
        "/orders", json={"lines": [{"product_id": product_id, "quantity": 3}]}, headers=headers
    )
    body = assert_problem(resp, 409, "insufficient-stock")
    assert body["product_id"] == product_id
    assert product_id in body["detail"]


async def test_a_repeated_idempotency_key_returns_the_first_response_and_bills_once(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=1)
    _, headers = await customer(api)
    order = {"lines": [{"product_id": product_id, "quantity": 1}]}
    retry_headers = {**headers, "Idempotency-Key": "checkout-7f3a"}
    first = await api.post("/orders", json=order, headers=retry_headers)
    second = await api.post("/orders", json=order, headers=retry_headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert len(await events_of_type(store, "OrderBilled")) == 1
    assert (await store.state(f"product:{product_id}"))["stock"] == "0"


async def test_parallel_retries_with_one_idempotency_key_bill_once(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=10)
    _, headers = await customer(api)
    order = {"lines": [{"product_id": product_id, "quantity": 1}]}
    retry_headers = {**headers, "Idempotency-Key": "same-click"}
    responses = await asyncio.gather(
        *(api.post("/orders", json=order, headers=retry_headers) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert len(await events_of_type(store, "OrderBilled")) == 1


async def test_an_idempotency_key_reused_for_another_order_is_refused(
    api: AsyncTestClient[Any],
    store: EventStore,
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=10)
    _, headers = await customer(api)
    retry_headers = {**headers, "Idempotency-Key": "k-1"}
    ok = await api.post(
        "/orders",
        json={"lines": [{"product_id": product_id, "quantity": 1}]},
        headers=retry_headers,
    )
    assert ok.status_code == 201
    other = await api.post(
        "/orders",
        json={"lines": [{"product_id": product_id, "quantity": 2}]},
        headers=retry_headers,
    )
    assert_problem(other, 422, "idempotency-key-reused")


async def test_idempotency_keys_are_per_account(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=10)
    order = {"lines": [{"product_id": product_id, "quantity": 1}]}
    for _ in range(2):
        _, headers = await customer(api)
        resp = await api.post("/orders", json=order, headers={**headers, "Idempotency-Key": "k"})
        assert resp.status_code == 201
    assert len(await events_of_type(store, "OrderBilled")) == 2


async def test_billing_needs_a_valid_token(api: AsyncTestClient[Any], store: EventStore) -> None:
    order = {"lines": [{"product_id": "x", "quantity": 1}]}
    assert_problem(await api.post("/orders", json=order), 401)
    bad = {"Authorization": "Bearer not-a-jwt"}
    assert_problem(await api.post("/orders", json=order, headers=bad), 401)
