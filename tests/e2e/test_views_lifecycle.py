"""The order lifecycle through the views: each status in ``GET /orders/{id}`` and its history,
the products' ``stock`` / ``reserved``, no dead letters, and ``verify`` passing for every view."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from tests.conftest import REDIS_URL
from tests.e2e import create_product, customer
from tests.e2e.test_views_support import (  # noqa: F401
    VIEWS,
    Shop,
    admin_headers,
    fresh,
    pg_database_fixture,
    shop_fixture,
)
from workers.verify import verify_view


async def order_after(shop: Shop, oid: str, headers: dict[str, str], position: str) -> Any:
    resp = fresh(
        await shop.api.get(f"/orders/{oid}", params={"min_position": position}, headers=headers)
    )
    return resp.json()


async def test_happy_path_shows_every_status_and_the_views_verify(shop: Shop) -> None:
    api = shop.api
    boss = await admin_headers(shop)
    mug = await create_product(api, boss, price=1000, stock=5)
    _, headers = await customer(api)
    await api.put(f"/cart/items/{mug}", json={"quantity": 2}, headers=headers)
    placed = await api.post("/checkout", headers=headers)
    assert placed.status_code == 201, placed.text
    oid, position = placed.json()["order_id"], placed.json()["position"]
    order = await order_after(shop, oid, headers, position)
    assert order["status"] == "awaiting_payment"
    product = fresh(await api.get(f"/products/{mug}", params={"min_position": position})).json()
    assert (product["stock"], product["reserved"]) == (3, 2)

    declined = await api.post(
        f"/orders/{oid}/payment", json={"card_token": "tok_declined"}, headers=headers
    )
    assert declined.status_code == 402
    paid = await api.post(
        f"/orders/{oid}/payment", json={"card_token": "tok_approved"}, headers=headers
    )
    order = await order_after(shop, oid, headers, paid.json()["position"])
    assert order["status"] == "paid"
    assert [p["status"] for p in order["payments"]] == ["declined", "captured"]
    product = fresh(
        await api.get(f"/products/{mug}", params={"min_position": paid.json()["position"]})
    ).json()
    assert (product["stock"], product["reserved"]) == (3, 0)

    shipped = await api.post(
        f"/orders/{oid}/shipments",
        json={"carrier": "correios", "tracking_code": "BR1"},
        headers=boss,
    )
    order = await order_after(shop, oid, headers, shipped.json()["position"])
    assert order["status"] == "shipped"
    assert order["shipments"][0]["tracking_code"] == "BR1"
    delivered = await api.post(f"/orders/{oid}/delivered", headers=boss)
    order = await order_after(shop, oid, headers, delivered.json()["position"])
    assert order["status"] == "delivered"
    refund = await api.post(
        f"/orders/{oid}/refunds", json={"amount": 500, "reason": "scratched"}, headers=boss
    )
    order = await order_after(shop, oid, headers, refund.json()["position"])
    assert order["status"] == "partially_refunded"
    assert [(r["amount"], r["reason"]) for r in order["refunds"]] == [(500, "scratched")]
    assert [h["status"] for h in order["history"]] == [
        "awaiting_payment",
        "paid",
        "shipped",
        "delivered",
        "partially_refunded",
    ]
    listed = fresh(
        await api.get(
            "/orders", params={"min_position": refund.json()["position"]}, headers=headers
        )
    ).json()
    assert [(o["id"], o["status"]) for o in listed["items"]] == [(oid, "partially_refunded")]

    # A second order is cancelled unpaid, a third is billed now and cancelled.
    await api.put(f"/cart/items/{mug}", json={"quantity": 1}, headers=headers)
    second = (await api.post("/checkout", headers=headers)).json()["order_id"]
    await api.post(f"/orders/{second}/cancel", headers=headers)
    billed = await api.post(
        "/orders", json={"lines": [{"product_id": mug, "quantity": 1}]}, headers=headers
    )
    third = billed.json()["order_id"]
    cancelled = await api.post(f"/orders/{third}/cancel", headers=headers)
    position = cancelled.json()["position"]
    order = await order_after(shop, third, headers, position)
    assert [h["status"] for h in order["history"]] == ["paid", "cancelled"]
    product = fresh(await api.get(f"/products/{mug}", params={"min_position": position})).json()
    assert (product["stock"], product["reserved"]) == (3, 0)

    sales = fresh(
        await api.get("/analytics/sales", params={"min_position": position}, headers=boss)
    ).json()
    # Sold: 2 x 1000 paid at checkout, 1 x 1000 billed now (its cancellation took no payment
    # through the port, so nothing was refunded); refunded: 500. The unpaid order is no sale.
    assert [(d["gross"], d["refunds"], d["net"]) for d in sales] == [(3000, 500, 2500)]
    statuses = await shop.pool.fetch(
        "SELECT status, count(*) AS n FROM dw.fact_order_status GROUP BY status ORDER BY status"
    )
    assert {r["status"]: r["n"] for r in statuses} == {
        "awaiting_payment": 2,
        "paid": 1,
        "shipped": 1,
        "delivered": 1,
        "partially_refunded": 1,
        "cancelled": 2,
    }
    [funnel] = fresh(
        await api.get("/analytics/funnel", params={"min_position": position}, headers=boss)
    ).json()
    counts = {k: funnel[k] for k in ("carts", "checkouts", "paid", "shipped", "delivered")}
    assert counts == {"carts": 1, "checkouts": 2, "paid": 1, "shipped": 1, "delivered": 1}
    assert (funnel["cancelled"], funnel["expired"], funnel["cancellation_rate"]) == (2, 0, 1.0)
    assert funnel["ship_p50_seconds"] is not None and funnel["ship_p50_seconds"] >= 0
    payments = await shop.pool.fetch("SELECT status FROM dw.fact_payment ORDER BY attempt")
    assert [r["status"] for r in payments] == ["declined", "captured"]

    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        dead = [k async for k in redis.scan_iter(match=f"{shop.settings.redis.prefix}:dlq:*")]
        assert [k for k in dead if await redis.xlen(k)] == []
    finally:
        await redis.aclose()
    results = [await verify_view(shop.settings, name) for name in VIEWS]
    assert [(r.view, r.ok, r.differences) for r in results] == [(n, True, []) for n in VIEWS]
