"""HTTP → log → projector → PostgreSQL warehouse → HTTP analytics, checked against sums
computed directly from the events in the log."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from events.types import OrderBilled
from tests.e2e import PASSWORD, assert_problem, create_product, customer, sign_up
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    admin_headers,
    fresh,
    last_position,
    pg_database_fixture,
    shop_fixture,
)


async def order(shop: Shop, headers: dict[str, str], lines: list[tuple[str, int]]) -> str:
    resp = await shop.api.post(
        "/orders",
        json={"lines": [{"product_id": p, "quantity": q} for p, q in lines]},
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["order_id"])


async def a_day_of_trade(shop: Shop) -> dict[str, Any]:
    """Two products; a price change between two orders; logins that fail and succeed."""
    admin = await admin_headers(shop)
    mug = await create_product(shop.api, admin, name="Mug", price=1000, stock=100)
    tea = await create_product(shop.api, admin, name="Tea", price=500, stock=100)
    _, ana = await customer(shop.api)
    first = await order(shop, ana, [(mug, 2), (tea, 1)])
    changed = await shop.api.patch(f"/products/{mug}", json={"price": 1500}, headers=admin)
    assert changed.status_code == 200, changed.text
    _, bia = await customer(shop.api)
    second = await order(shop, bia, [(mug, 3)])
    third = await order(shop, ana, [(tea, 4)])
    _, email = await sign_up(shop.api)
    for password in ("wrong password", "wrong again", PASSWORD):
        await shop.api.post("/auth/login", json={"email": email, "password": password})
    await shop.api.post("/auth/login", json={"email": "nobody@example.com", "password": "x" * 8})
    return {"admin": admin, "mug": mug, "tea": tea, "orders": [first, second, third]}


async def test_lines_point_at_the_product_version_valid_when_billed(shop: Shop) -> None:
    trade = await a_day_of_trade(shop)
    fresh(
        await shop.api.get(
            "/analytics/sales",
            params={"min_position": await last_position(shop)},
            headers=trade["admin"],
        )
    )
    rows = await shop.pool.fetch(
        "SELECT f.order_id, f.unit_price, d.version, d.price, d.valid_from, d.valid_to"
        " FROM dw.fact_order_line f JOIN dw.dim_product d"
        " ON d.product_id = f.product_id AND d.version = f.product_version"
        " WHERE f.product_id = $1",
        trade["mug"],
    )
    by_order = {r["order_id"]: r for r in rows}
    first, second, _ = trade["orders"]
    assert (by_order[first]["version"], by_order[first]["price"]) == (1, 1000)
    assert (by_order[second]["version"], by_order[second]["price"]) == (2, 1500)
    assert by_order[first]["valid_to"] == by_order[second]["valid_from"]
    emails = await shop.pool.fetchval(
        "SELECT count(*) FROM dw.dim_account WHERE email_digest LIKE '%@%'"
    )
    assert emails == 0


def expected_sales(orders: list[Any], granularity: str) -> list[dict[str, Any]]:
    def period(day: date) -> date:
        if granularity == "week":
            return day - timedelta(days=day.weekday())
        if granularity == "month":
            return day.replace(day=1)
        return day

    groups: dict[date, dict[str, Any]] = defaultdict(
        lambda: {"orders": 0, "items": 0, "revenue": 0}
    )
    for rec in orders:
        event: OrderBilled = rec.event
        g = groups[period(rec.at.date())]
        g["orders"] += 1
        g["items"] += sum(line.quantity for line in event.lines)
        g["revenue"] += sum(line.line_total for line in event.lines)
    # No refunds in this trade: gross = net = revenue.
    return [
        {"period": p.isoformat(), **g, "gross": g["revenue"], "refunds": 0, "net": g["revenue"]}
        for p, g in sorted(groups.items())
    ]


async def test_sales_top_products_and_logins_equal_sums_over_the_events(shop: Shop) -> None:
    trade = await a_day_of_trade(shop)
    headers, position = trade["admin"], await last_position(shop)
    orders = await shop.events("OrderBilled")
    assert len(orders) == 3
    for granularity in ("day", "week", "month"):
        resp = fresh(
            await shop.api.get(
                "/analytics/sales",
                params={"granularity": granularity, "min_position": position},
                headers=headers,
            )
        )
        assert resp.json() == expected_sales(orders, granularity), granularity

    quantity: dict[str, int] = defaultdict(int)
    revenue: dict[str, int] = defaultdict(int)
    for rec in orders:
        for line in rec.event.lines:
            quantity[line.product_id] += line.quantity
            revenue[line.product_id] += line.line_total
    for by, totals in (("revenue", revenue), ("quantity", quantity)):
        resp = fresh(
            await shop.api.get(
                "/analytics/top-products",
                params={"by": by, "limit": 10, "min_position": position},
                headers=headers,
            )
        )
        top = resp.json()
        assert [(p["product_id"], p[by]) for p in top] == sorted(
            totals.items(), key=lambda kv: (-kv[1], kv[0])
        )
        assert {p["product_id"]: (p["quantity"], p["revenue"]) for p in top} == {
            pid: (quantity[pid], revenue[pid]) for pid in quantity
        }
    one = fresh(await shop.api.get("/analytics/top-products", params={"limit": 1}, headers=headers))
    assert len(one.json()) == 1

    per_day: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for rec in await shop.events():
        if rec.type in ("LoginSucceeded", "LoginFailed"):
            per_day[rec.at.date().isoformat()][rec.type == "LoginFailed"] += 1
    logins = fresh(
        await shop.api.get("/analytics/logins", params={"min_position": position}, headers=headers)
    )
    assert logins.json() == [
        {"date": day, "successes": s, "failures": f} for day, (s, f) in sorted(per_day.items())
    ]
    assert sum(f for _, f in per_day.values()) == 3


async def test_date_bounds_filter_the_analytics(shop: Shop) -> None:
    trade = await a_day_of_trade(shop)
    headers, position = trade["admin"], await last_position(shop)
    orders = await shop.events("OrderBilled")
    days = sorted({rec.at.date() for rec in orders})
    inside = {"from": days[0].isoformat(), "to": days[-1].isoformat(), "min_position": position}
    resp = fresh(await shop.api.get("/analytics/sales", params=inside, headers=headers))
    assert resp.json() == expected_sales(orders, "day")
    before = {"to": (days[0] - timedelta(days=1)).isoformat()}
    assert (
        fresh(await shop.api.get("/analytics/sales", params=before, headers=headers)).json() == []
    )
    assert (
        fresh(await shop.api.get("/analytics/logins", params=before, headers=headers)).json() == []
    )
    backwards = {"from": days[-1].isoformat(), "to": (days[0] - timedelta(days=1)).isoformat()}
    assert_problem(await shop.api.get("/analytics/sales", params=backwards, headers=headers), 400)
    assert_problem(
        await shop.api.get("/analytics/sales", params={"granularity": "year"}, headers=headers),
        400,
    )
    _, customer_headers = await customer(shop.api)
    assert_problem(await shop.api.get("/analytics/sales", headers=customer_headers), 403)
