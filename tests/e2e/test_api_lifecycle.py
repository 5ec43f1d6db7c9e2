"""The order lifecycle over HTTP against the real app and Redis: cart, checkout with timed
reservations, payment through the sandbox acquirer, expiry, cancellation, refunds, shipment."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.commands.errors import InvalidTransition
from app.controllers.payments_webhook import signature
from app.main import create_app
from app.payments.sandbox import SandboxAcquirer
from app.payments.service import pay
from events.store import AppendResult, EventStore, Metadata
from tests.e2e import admin, api_settings, assert_problem, create_product, customer
from tests.support.cluster import single_and_cluster
from workers.commands.expire import expirer
from workers.expiry import ExpiryWorker
from workers.state import verify_state

pytestmark = single_and_cluster


@pytest.fixture(name="api")
async def lifecycle_api(prefix: str, store: EventStore) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(api_settings(prefix, store))) as client:
        yield client


def sandbox(api: AsyncTestClient[Any]) -> SandboxAcquirer:
    provider = api.app.state.get("payments")
    assert isinstance(provider, SandboxAcquirer)
    return provider


async def stock_of(store: EventStore, product_id: str) -> tuple[int, int]:
    state = await store.state(f"product:{product_id}")
    return int(state["stock"]), int(state.get("reserved", 0))


async def checked_out(
    api: AsyncTestClient[Any], headers: dict[str, str], product_id: str, quantity: int = 1
) -> dict[str, Any]:
    put = await api.put(f"/cart/items/{product_id}", json={"quantity": quantity}, headers=headers)
    assert put.status_code == 200, put.text
    resp = await api.post("/checkout", headers=headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def test_cart_is_priced_and_checkout_reserves_its_stock_and_empties_it(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=2590, stock=5)
    tee = await create_product(api, boss, price=4990, stock=5)
    _, headers = await customer(api)
    await api.put(f"/cart/items/{mug}", json={"quantity": 2}, headers=headers)
    await api.put(f"/cart/items/{tee}", json={"quantity": 1}, headers=headers)
    await api.put(f"/cart/items/{tee}", json={"quantity": 3}, headers=headers)
    cart = (await api.get("/cart", headers=headers)).json()
    assert [(i["product_id"], i["quantity"], i["line_total"]) for i in cart["items"]] == [
        (mug, 2, 5180),
        (tee, 3, 14970),
    ]
    assert cart["total"] == 20150
    removed = await api.delete(f"/cart/items/{tee}", headers=headers)
    assert removed.status_code == 200 and removed.json()["total"] == 5180

    resp = await api.post("/checkout", headers=headers)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"order_id", "status", "total", "currency", "reserved_until", "position"}
    assert (body["status"], body["total"], body["currency"]) == ("awaiting_payment", 5180, "BRL")
    assert await stock_of(store, mug) == (3, 2)
    assert (await api.get("/cart", headers=headers)).json()["items"] == []


async def test_checkout_with_the_same_idempotency_key_places_one_order(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    await api.put(f"/cart/items/{mug}", json={"quantity": 2}, headers=headers)
    keyed = {**headers, "Idempotency-Key": "checkout-1"}
    first = await api.post("/checkout", headers=keyed)
    again = await api.post("/checkout", headers=keyed)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert first.json()["order_id"] == again.json()["order_id"]
    assert await stock_of(store, mug) == (3, 2)


async def test_an_empty_cart_cannot_be_checked_out(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    _, headers = await customer(api)
    assert_problem(await api.post("/checkout", headers=headers), 409, "empty-cart")


async def test_ten_parallel_checkouts_of_one_unit_on_stock_five_place_exactly_five(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    customers = [await customer(api) for _ in range(10)]
    for _, headers in customers:
        await api.put(f"/cart/items/{mug}", json={"quantity": 1}, headers=headers)
    responses = await asyncio.gather(
        *(api.post("/checkout", headers=headers) for _, headers in customers)
    )
    assert sorted(r.status_code for r in responses) == [201] * 5 + [409] * 5
    for refused in (r for r in responses if r.status_code == 409):
        problem = assert_problem(refused, 409, "insufficient-stock")
        assert problem["product_id"] == mug
        assert problem["field"] == "lines[0].quantity"
    assert await stock_of(store, mug) == (0, 5)


async def test_happy_path_declined_then_paid_shipped_delivered_and_partly_refunded(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    order = await checked_out(api, headers, mug, 2)
    oid = order["order_id"]

    declined = await api.post(
        f"/orders/{oid}/payment", json={"card_token": "tok_declined"}, headers=headers
    )
    assert_problem(declined, 402, "payment-declined")
    assert (await store.state(f"order:{oid}"))["status"] == "awaiting_payment"

    paid = await api.post(
        f"/orders/{oid}/payment", json={"card_token": "tok_approved"}, headers=headers
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid"
    assert await stock_of(store, mug) == (3, 0)
    assert sandbox(api).captured_for(oid) == 2000

    shipped = await api.post(
        f"/orders/{oid}/shipments",
        json={"carrier": "correios", "tracking_code": "BR1"},
        headers=boss,
    )
    assert shipped.status_code == 201, shipped.text
    assert shipped.json()["status"] == "shipped"
    delivered = await api.post(f"/orders/{oid}/delivered", headers=boss)
    assert delivered.status_code == 200 and delivered.json()["status"] == "delivered"
    refunded = await api.post(
        f"/orders/{oid}/refunds", json={"amount": 500, "reason": "scratched"}, headers=boss
    )
    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["status"] == "partially_refunded"
    assert sandbox(api).captured_for(oid) == 1500
    too_much = await api.post(f"/orders/{oid}/refunds", json={"amount": 1501}, headers=boss)
    assert_problem(too_much, 409, "refund-too-large")
    rest = await api.post(f"/orders/{oid}/refunds", json={"amount": 1500}, headers=boss)
    assert rest.json()["status"] == "refunded"
    assert sandbox(api).captured_for(oid) == 0
    assert (await verify_state(store)).ok


async def test_a_timed_out_payment_leaves_the_order_payable_and_a_retry_charges_once(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    oid = (await checked_out(api, headers, mug))["order_id"]
    timeout = await api.post(
        f"/orders/{oid}/payment", json={"card_token": "tok_timeout"}, headers=headers
    )
    assert_problem(timeout, 504, "payment-timeout")
    assert (await store.state(f"order:{oid}"))["status"] == "awaiting_payment"
    tries = await asyncio.gather(
        *(
            api.post(f"/orders/{oid}/payment", json={"card_token": "tok_approved"}, headers=headers)
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in tries) == [200] + [409] * 4
    assert len(sandbox(api).authorizations_for(oid)) == 1
    assert sandbox(api).captured_for(oid) == 1000


async def test_cancelling_a_paid_order_returns_the_stock_and_refunds_in_full(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    oid = (await checked_out(api, headers, mug, 2))["order_id"]
    await api.post(f"/orders/{oid}/payment", json={"card_token": "tok_approved"}, headers=headers)
    cancelled = await api.post(f"/orders/{oid}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert await stock_of(store, mug) == (5, 0)
    state = await store.state(f"order:{oid}")
    assert (state["captured"], state["refunded"]) == ("2000", "2000")
    assert sandbox(api).captured_for(oid) == 0


async def test_cancelling_an_unpaid_order_releases_its_reservation(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    oid = (await checked_out(api, headers, mug, 2))["order_id"]
    assert (await api.post(f"/orders/{oid}/cancel", headers=headers)).status_code == 200
    assert await stock_of(store, mug) == (5, 0)


async def test_cancelling_after_shipment_is_refused_and_changes_nothing(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    oid = (await checked_out(api, headers, mug))["order_id"]
    await api.post(f"/orders/{oid}/payment", json={"card_token": "tok_approved"}, headers=headers)
    await api.post(
        f"/orders/{oid}/shipments", json={"carrier": "c", "tracking_code": "t"}, headers=boss
    )
    before = await store.count()
    for who in (headers, boss):
        refused = assert_problem(await api.post(f"/orders/{oid}/cancel", headers=who), 409)
        assert refused["current_status"] == "shipped"
    assert await store.count() == before
    assert await stock_of(store, mug) == (4, 0)


async def test_every_illegal_transition_is_409_naming_the_status_and_changes_nothing(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=50)
    _, headers = await customer(api)
    pay = {"card_token": "tok_approved"}
    ship = {"carrier": "c", "tracking_code": "t"}

    async def order_in(status: str) -> str:
        oid = str((await checked_out(api, headers, mug))["order_id"])
        if status in ("paid", "shipped", "delivered", "refunded"):
            await api.post(f"/orders/{oid}/payment", json=pay, headers=headers)
        if status in ("shipped", "delivered"):
            await api.post(f"/orders/{oid}/shipments", json=ship, headers=boss)
        if status == "delivered":
            await api.post(f"/orders/{oid}/delivered", headers=boss)
        if status == "refunded":
            await api.post(f"/orders/{oid}/refunds", json={"amount": 2590}, headers=boss)
        if status == "cancelled":
            await api.post(f"/orders/{oid}/cancel", headers=headers)
        return oid

    steps: dict[str, tuple[str, dict[str, Any] | None, dict[str, str]]] = {
        "pay": ("payment", pay, headers),
        "ship": ("shipments", ship, boss),
        "deliver": ("delivered", None, boss),
        "refund": ("refunds", {"amount": 1}, boss),
        "cancel": ("cancel", None, headers),
    }
    illegal = {
        "awaiting_payment": ["ship", "deliver", "refund"],
        "paid": ["pay", "deliver"],
        "shipped": ["pay", "ship", "cancel"],
        "delivered": ["pay", "ship", "deliver", "cancel"],
        "refunded": ["pay", "ship", "deliver", "refund"],
        "cancelled": ["pay", "ship", "deliver", "refund", "cancel"],
    }
    for status, refused_steps in illegal.items():
        oid = await order_in(status)
        assert (await store.state(f"order:{oid}"))["status"] == status
        for step in refused_steps:
            path, body, who = steps[step]
            before = (await store.count(), await store.state(f"order:{oid}"))
            resp = await api.post(f"/orders/{oid}/{path}", json=body, headers=who)
            problem = assert_problem(resp, 409)
            assert problem["current_status"] == status, (status, step, problem)
            assert (await store.count(), await store.state(f"order:{oid}")) == before
    assert (await verify_state(store)).ok


async def test_an_unpaid_order_expires_its_stock_returns_and_paying_it_is_409(
    prefix: str, store: EventStore
) -> None:
    settings = dataclasses.replace(api_settings(prefix, store), reservation_ttl_seconds=1)
    async with AsyncTestClient(app=create_app(settings)) as api:
        boss = await admin(api, store)
        mug = await create_product(api, boss, stock=5)
        _, headers = await customer(api)
        order = await checked_out(api, headers, mug, 2)
        oid = order["order_id"]
        worker = ExpiryWorker(store, expirer(store), clock=lambda: order["reserved_until"])
        assert await worker.run_once() == 1
        assert await worker.run_once() == 0
        assert (await store.state(f"order:{oid}"))["status"] == "expired"
        assert await stock_of(store, mug) == (5, 0)
        late = await api.post(
            f"/orders/{oid}/payment", json={"card_token": "tok_approved"}, headers=headers
        )
        assert assert_problem(late, 409)["current_status"] == "expired"
        assert sandbox(api).authorizations_for(oid) == []
        expired = [e async for e in store.read_all() if e.type == "OrderExpired"]
        assert len(expired) == 1


async def test_a_worker_that_crashed_before_dropping_its_due_entry_expires_nothing_twice(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    order = await checked_out(api, headers, mug)
    calls: list[bool] = []
    real = expirer(store)

    async def expire_then_crash(order_id: str, at: int) -> bool:
        calls.append(await real(order_id, at))
        raise RuntimeError("killed after the append, before the due entry was dropped")

    crashing = ExpiryWorker(store, expire_then_crash, clock=lambda: order["reserved_until"])
    with pytest.raises(RuntimeError):
        await crashing.run_once()
    restarted = ExpiryWorker(store, expirer(store), clock=lambda: order["reserved_until"])
    assert await restarted.run_once() == 0
    assert calls == [True]
    assert len([e async for e in store.read_all() if e.type == "OrderExpired"]) == 1
    assert await stock_of(store, mug) == (5, 0)


async def test_payment_racing_expiry_ends_in_exactly_one_of_them_every_time(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    """The payment step and the expiry run concurrently on one loop (the test client would
    serialise them: it blocks the test's loop during a request), the expiry starting at a
    random point of the payment, so the interleavings vary over the rounds; whichever append
    lands first wins, the other is refused, and a lost payment's authorization is voided."""
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=100)
    account_id, headers = await customer(api)
    expire = expirer(store)
    acquirer = SandboxAcquirer()
    meta = Metadata(actor=f"account:{account_id}")
    rounds = 40
    outcomes: dict[str, int] = {"paid": 0, "expired": 0}
    for _ in range(rounds):
        order = await checked_out(api, headers, mug)
        oid = order["order_id"]

        async def expire_soon(o: dict[str, Any] = order) -> bool:
            await asyncio.sleep(random.uniform(0, 0.002))
            return await expire(o["order_id"], o["reserved_until"])

        paid, expired = await asyncio.gather(
            pay(store, acquirer, oid, account_id, "tok_approved", meta),
            expire_soon(),
            return_exceptions=True,
        )
        status = (await store.state(f"order:{oid}"))["status"]
        assert status in ("paid", "expired")
        outcomes[status] += 1
        if status == "paid":
            assert isinstance(paid, AppendResult) and expired is False, (paid, expired)
        else:
            assert isinstance(paid, InvalidTransition) and expired is True, (paid, expired)
        assert acquirer.captured_for(oid) == (1000 if status == "paid" else 0)
    print("payment vs expiry outcomes:", outcomes, "authorizations voided:", acquirer.voided())
    events = [e.type async for e in store.read_all()]
    assert events.count("OrderPaid") + events.count("OrderExpired") == rounds
    assert events.count("OrderPaid") == outcomes["paid"]
    assert acquirer.voided() <= outcomes["expired"]
    assert await stock_of(store, mug) == (100 - outcomes["paid"], 0)


async def test_bill_now_orders_are_paid_and_follow_the_lifecycle(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    billed = await api.post(
        "/orders", json={"lines": [{"product_id": mug, "quantity": 1}]}, headers=headers
    )
    oid = billed.json()["order_id"]
    shipped = await api.post(
        f"/orders/{oid}/shipments", json={"carrier": "c", "tracking_code": "t"}, headers=boss
    )
    assert shipped.status_code == 201, shipped.text
    pay = await api.post(
        f"/orders/{oid}/payment", json={"card_token": "tok_approved"}, headers=headers
    )
    assert assert_problem(pay, 409)["current_status"] == "shipped"


async def test_portuguese_aliases_run_the_same_commands(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    put = await api.put(f"/carrinho/itens/{mug}", json={"quantity": 2}, headers=headers)
    assert put.status_code == 200 and put.json()["total"] == 2000
    assert (await api.get("/carrinho", headers=headers)).json()["items"][0]["quantity"] == 2
    oid = (await api.post("/checkout", headers=headers)).json()["order_id"]
    paid = await api.post(
        f"/pedidos/{oid}/pagamento", json={"card_token": "tok_approved"}, headers=headers
    )
    assert paid.status_code == 200 and paid.json()["status"] == "paid"
    cancelled = await api.post(f"/pedidos/{oid}/cancelamento", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert await stock_of(store, mug) == (5, 0)
    schema = (await api.get("/schema/openapi.json")).json()
    assert schema["paths"]["/pedidos/{order_id}/pagamento"]["post"]["tags"] == ["legacy"]


async def test_an_undecodable_checkout_entry_does_not_stall_the_expiry_worker(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    for p in range(store.keys.partitions):
        fields = {"id": "x", "type": "OrderPlaced", "schema": "1", "aggregate": "order:x"}
        await store.redis.xadd(store.keys.log(p), {**fields, "data": "{not json"})
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    order = await checked_out(api, headers, mug)
    worker = ExpiryWorker(store, expirer(store), clock=lambda: order["reserved_until"])
    assert await worker.run_once() == 1
    assert (await store.state(f"order:{order['order_id']}"))["status"] == "expired"


async def test_a_signed_webhook_confirms_a_payment_once_and_a_forged_one_is_refused(
    prefix: str, store: EventStore
) -> None:
    settings = dataclasses.replace(api_settings(prefix, store), payment_webhook_secret="whsec-test")
    async with AsyncTestClient(app=create_app(settings)) as api:
        boss = await admin(api, store)
        mug = await create_product(api, boss, price=1000, stock=5)
        _, headers = await customer(api)
        oid = (await checked_out(api, headers, mug, 2))["order_id"]
        notice = {
            "order_id": oid,
            "attempt": 1,
            "authorization_id": "auth_w1",
            "status": "approved",
            "amount": 2000,
        }
        body = json.dumps(notice).encode()
        forged = await api.post(
            "/payments/webhook",
            content=body,
            headers={"X-Streamshop-Signature": signature("wrong", body)},
        )
        assert_problem(forged, 401)
        assert (await store.state(f"order:{oid}"))["status"] == "awaiting_payment"
        poisoned = json.dumps({**notice, "provider": "psp\x00"}).encode()
        refused = await api.post(
            "/payments/webhook",
            content=poisoned,
            headers={"X-Streamshop-Signature": signature("whsec-test", poisoned)},
        )
        assert assert_problem(refused, 400)["field"] == "provider"
        assert (await store.state(f"order:{oid}"))["status"] == "awaiting_payment"
        signed = {"X-Streamshop-Signature": signature("whsec-test", body)}
        for _ in range(2):
            resp = await api.post("/payments/webhook", content=body, headers=signed)
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "paid"
        assert len([e async for e in store.read_all() if e.type == "OrderPaid"]) == 1
        assert await stock_of(store, mug) == (3, 0)
