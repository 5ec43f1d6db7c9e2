"""``Idempotency-Key`` on the order lifecycle's writes (checkout, cancellation, refunds): a
retry gets the first answer and the effect happens once; a key reused for another request
is refused and nothing is appended; a record stored before these routes kept a fingerprint
replays as it did. On one node and on the Redis Cluster, where a checkout spanning slots
runs as a saga."""

from __future__ import annotations

import asyncio
import json
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
from tests.e2e.test_api_idempotent_creations import keyed
from tests.e2e.test_api_lifecycle import sandbox, stock_of
from tests.support.cluster import single_and_cluster

pytestmark = single_and_cluster

KEYED_OPERATIONS = {"checkout", "cancelOrder", "refundOrder", "cancelarPedido"}
"""Their schema entries are checked with the creations' (``test_api_idempotent_creations``)."""


async def fill_cart(
    api: AsyncTestClient[Any], headers: dict[str, str], product_id: str, quantity: int
) -> None:
    put = await api.put(f"/cart/items/{product_id}", json={"quantity": quantity}, headers=headers)
    assert put.status_code == 200, put.text


async def cart_lines(api: AsyncTestClient[Any], headers: dict[str, str]) -> list[tuple[str, int]]:
    cart = (await api.get("/cart", headers=headers)).json()
    return [(item["product_id"], item["quantity"]) for item in cart["items"]]


async def placed_order(
    api: AsyncTestClient[Any], headers: dict[str, str], product_id: str, *, paid: bool = False
) -> str:
    await fill_cart(api, headers, product_id, 2)
    placed = await api.post("/checkout", headers=headers)
    assert placed.status_code == 201, placed.text
    order_id = str(placed.json()["order_id"])
    if paid:
        pay = await api.post(
            f"/orders/{order_id}/payment", json={"card_token": "tok_approved"}, headers=headers
        )
        assert pay.status_code == 200, pay.text
    return order_id


async def as_stored_before_fingerprints(store: EventStore, scope: str, *homes: str) -> None:
    """Rewrite the idempotency record under ``scope`` as the code before these routes kept
    a fingerprint stored it: its result JSON without ``request``. ``homes`` are the
    aggregates whose partition may hold it on a Redis Cluster (``Keys.idem``)."""
    for home in (None, *homes):
        key = store.keys.idem(scope, home)
        raw = await store.redis.get(key)
        if raw is not None:
            break
    else:
        raise AssertionError(f"no idempotency record under {scope}")
    record = json.loads(raw)
    result = json.loads(record["result"])
    assert result.pop("request"), result
    record["result"] = json.dumps(result, separators=(",", ":"))
    await store.redis.set(key, json.dumps(record), keepttl=True)


# -- POST /checkout -----------------------------------------------------------------------


async def test_a_checkout_retried_with_its_key_answers_the_first_order(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    await fill_cart(api, headers, mug, 2)
    first = await api.post("/checkout", headers=keyed(headers, "k-1"))
    again = await api.post("/checkout", headers=keyed(headers, "k-1"))
    assert first.status_code == again.status_code == 201, again.text
    assert first.content == again.content
    assert len(await events_of_type(store, "OrderPlaced")) == 1
    assert await stock_of(store, mug) == (3, 2)


async def test_parallel_checkouts_with_one_key_place_one_order(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    await fill_cart(api, headers, mug, 2)
    responses = await asyncio.gather(
        *(api.post("/checkout", headers=keyed(headers, "click")) for _ in range(4))
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert len(await events_of_type(store, "OrderPlaced")) == 1
    assert await stock_of(store, mug) == (3, 2)


async def test_a_checkout_key_reused_for_another_cart_is_refused(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    tee = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    await fill_cart(api, headers, mug, 2)
    assert (await api.post("/checkout", headers=keyed(headers, "k-1"))).status_code == 201
    await fill_cart(api, headers, tee, 1)
    before = await store.count()
    other = await api.post("/checkout", headers=keyed(headers, "k-1"))
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before
    assert await cart_lines(api, headers) == [(tee, 1)]
    assert await stock_of(store, tee) == (5, 0)


async def test_a_checkout_record_stored_before_fingerprints_replays_as_before(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    tee = await create_product(api, boss, stock=5)
    account_id, headers = await customer(api)
    await fill_cart(api, headers, mug, 2)
    first = await api.post("/checkout", headers=keyed(headers, "k-1"))
    assert first.status_code == 201, first.text
    order_id = first.json()["order_id"]
    await as_stored_before_fingerprints(
        store, f"checkout:{account_id}:k-1", f"cart:{account_id}", f"order:{order_id}"
    )
    await fill_cart(api, headers, tee, 1)
    before = await store.count()
    again = await api.post("/checkout", headers=keyed(headers, "k-1"))
    assert again.status_code == 201, again.text
    assert again.content == first.content
    assert await store.count() == before


# -- POST /orders/{id}/cancel -------------------------------------------------------------


async def test_a_cancel_retried_with_its_key_answers_the_first_time(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug, paid=True)
    body = {"reason": "changed my mind"}
    url = f"/orders/{order_id}/cancel"
    first = await api.post(url, json=body, headers=keyed(headers, "c-1"))
    again = await api.post(url, json=body, headers=keyed(headers, "c-1"))
    assert first.status_code == again.status_code == 200, again.text
    assert first.content == again.content
    assert len(await events_of_type(store, "OrderCancelled")) == 1
    assert await stock_of(store, mug) == (5, 0)
    assert sandbox(api).captured_for(order_id) == 0


async def test_a_cancel_key_reused_with_another_reason_is_refused(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug)
    url = f"/orders/{order_id}/cancel"
    ok = await api.post(url, json={"reason": "too late"}, headers=keyed(headers, "c-1"))
    assert ok.status_code == 200, ok.text
    before = await store.count()
    other = await api.post(url, json={"reason": "found it cheaper"}, headers=keyed(headers, "c-1"))
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before


async def test_a_cancel_key_reused_by_another_account_is_refused(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug)
    url = f"/orders/{order_id}/cancel"
    assert (await api.post(url, headers=keyed(headers, "c-1"))).status_code == 200
    before = await store.count()
    by_admin = await api.post(url, headers=keyed(boss, "c-1"))
    assert assert_problem(by_admin, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before


async def test_the_legacy_cancel_compares_its_key_too(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug)
    body = {"reason": "too late"}
    first = await api.post(f"/orders/{order_id}/cancel", json=body, headers=keyed(headers, "c-1"))
    legacy = f"/pedidos/{order_id}/cancelamento"
    again = await api.post(legacy, json=body, headers=keyed(headers, "c-1"))
    assert first.status_code == again.status_code == 200, again.text
    assert first.content == again.content
    other = await api.post(legacy, json={"reason": "outro"}, headers=keyed(headers, "c-1"))
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert len(await events_of_type(store, "OrderCancelled")) == 1


async def test_a_cancel_record_stored_before_fingerprints_replays_as_before(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug)
    url = f"/orders/{order_id}/cancel"
    first = await api.post(url, json={"reason": "too late"}, headers=keyed(headers, "c-1"))
    assert first.status_code == 200, first.text
    await as_stored_before_fingerprints(store, f"cancel:{order_id}:c-1", f"order:{order_id}")
    before = await store.count()
    again = await api.post(url, json={"reason": "outro"}, headers=keyed(headers, "c-1"))
    assert again.status_code == 200, again.text
    assert again.content == first.content
    assert await store.count() == before


# -- POST /orders/{id}/refunds ------------------------------------------------------------


async def test_a_refund_retried_with_its_key_refunds_once(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug, paid=True)
    body = {"amount": 500, "reason": "scratched"}
    url = f"/orders/{order_id}/refunds"
    first = await api.post(url, json=body, headers=keyed(boss, "r-1"))
    again = await api.post(url, json=body, headers=keyed(boss, "r-1"))
    assert first.status_code == again.status_code == 201, again.text
    assert first.content == again.content
    assert len(await events_of_type(store, "RefundIssued")) == 1
    assert (await store.state(f"order:{order_id}"))["refunded"] == "500"
    assert sandbox(api).captured_for(order_id) == 1500


async def test_a_refund_key_reused_for_another_amount_is_refused(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug, paid=True)
    url = f"/orders/{order_id}/refunds"
    body = {"amount": 500, "reason": "scratched"}
    assert (await api.post(url, json=body, headers=keyed(boss, "r-1"))).status_code == 201
    before = await store.count()
    other = await api.post(url, json={**body, "amount": 600}, headers=keyed(boss, "r-1"))
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before
    assert sandbox(api).captured_for(order_id) == 1500


async def test_a_refund_key_reused_with_another_reason_is_refused(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug, paid=True)
    url = f"/orders/{order_id}/refunds"
    body = {"amount": 500, "reason": "scratched"}
    assert (await api.post(url, json=body, headers=keyed(boss, "r-1"))).status_code == 201
    before = await store.count()
    other = await api.post(url, json={**body, "reason": "late"}, headers=keyed(boss, "r-1"))
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before


async def test_a_refund_record_stored_before_fingerprints_replays_as_before(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    order_id = await placed_order(api, headers, mug, paid=True)
    url = f"/orders/{order_id}/refunds"
    first = await api.post(url, json={"amount": 500}, headers=keyed(boss, "r-1"))
    assert first.status_code == 201, first.text
    await as_stored_before_fingerprints(store, f"refund:{order_id}:r-1", f"order:{order_id}")
    before = await store.count()
    again = await api.post(url, json={"amount": 600}, headers=keyed(boss, "r-1"))
    assert again.status_code == 201, again.text
    assert again.content == first.content
    assert await store.count() == before
    assert sandbox(api).captured_for(order_id) == 1500
