"""HTTP → log → projector → MongoDB → HTTP: the read models and their query API."""

from __future__ import annotations

from typing import Any

from tests.e2e import (
    PASSWORD,
    assert_problem,
    bearer,
    create_product,
    customer,
    log_in,
    sign_up,
)
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    fresh,
    last_position,
    pg_database_fixture,
    shop_fixture,
)
from tests.e2e.test_views_support import (
    admin_headers as admin_headers_of,
)


async def test_sign_up_login_product_and_order_show_at_once_with_min_position(shop: Shop) -> None:
    api = shop.api
    resp = await api.post(
        "/accounts", json={"name": "Ana", "email": "ana.e2e@example.com", "password": PASSWORD}
    )
    account_id, position = resp.json()["account_id"], resp.json()["position"]
    token = await log_in(api, "ana.e2e@example.com")
    headers = bearer(token)

    me = fresh(await api.get("/accounts/me", params={"min_position": position}, headers=headers))
    assert me.json()["id"] == account_id
    assert me.json()["email"] == "ana.e2e@example.com"
    assert "password" not in me.text and "argon2" not in me.text

    login = await api.post(
        "/auth/login", json={"email": "ana.e2e@example.com", "password": PASSWORD}
    )
    me = fresh(
        await api.get(
            "/accounts/me", params={"min_position": login.json()["position"]}, headers=headers
        )
    )
    assert me.json()["last_login_at"] is not None

    admin_headers = await admin_headers_of(shop)
    created = await api.post(
        "/products",
        json={"sku": "E2E-1", "name": "Caneca Azul", "price": 2590, "stock": 10},
        headers=admin_headers,
    )
    product_id = created.json()["product_id"]
    product = fresh(
        await api.get(
            f"/products/{product_id}", params={"min_position": created.json()["position"]}
        )
    )
    assert (product.json()["name"], product.json()["stock"]) == ("Caneca Azul", 10)

    changed = await api.patch(
        f"/products/{product_id}", json={"price": 1990}, headers=admin_headers
    )
    product = fresh(
        await api.get(
            f"/products/{product_id}", params={"min_position": changed.json()["position"]}
        )
    )
    assert product.json()["price"] == 1990

    billed = await api.post(
        "/orders", json={"lines": [{"product_id": product_id, "quantity": 3}]}, headers=headers
    )
    assert billed.status_code == 201, billed.text
    order_id, position = billed.json()["order_id"], billed.json()["position"]
    order = fresh(
        await api.get(f"/orders/{order_id}", params={"min_position": position}, headers=headers)
    )
    assert order.json()["total"] == 3 * 1990
    assert order.json()["lines"][0]["quantity"] == 3
    me = fresh(await api.get("/accounts/me", params={"min_position": position}, headers=headers))
    assert (me.json()["orders_count"], me.json()["total_spent"]) == (1, 5970)
    product = fresh(await api.get(f"/products/{product_id}", params={"min_position": position}))
    assert product.json()["stock"] == 7


CATALOG = [
    # name, category, price, stock
    ("Açaí Bowl", "food", 1500, 3),
    ("acai juice", "drinks", 900, 0),
    ("AÇAÍ Powder", "food", 4200, 8),
    ("Banana Bread", "food", 1200, 5),
    ("Coffee Beans", "drinks", 3500, 2),
    ("Cold Brew", "drinks", 1500, 0),
    ("Green Tea", "drinks", 800, 12),
    ("Mug", "home", 2590, 4),
    ("Mug XL", "home", 3190, 1),
    ("Pão de Queijo", "food", 600, 20),
    ("Queijo Minas", "food", 2800, 0),
    ("Tea Pot", "home", 7900, 2),
]


async def all_pages(shop: Shop, params: dict[str, Any]) -> tuple[list[str], int]:
    """Follow ``next_cursor`` to the end: (product names in order, number of pages)."""
    names: list[str] = []
    pages = 0
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        resp = fresh(await shop.api.get("/products", params=query))
        pages += 1
        names.extend(item["name"] for item in resp.json()["items"])
        cursor = resp.json()["next_cursor"]
        if cursor is None:
            return names, pages


async def test_filters_and_pagination_are_exact_across_pages(shop: Shop) -> None:
    admin_headers = await admin_headers_of(shop)
    for slug in sorted({category for _, category, _, _ in CATALOG}):
        made = await shop.api.post(
            "/categories", json={"slug": slug, "name": slug.title()}, headers=admin_headers
        )
        assert made.status_code == 201, made.text
    ids = []
    for name, category, price, stock in CATALOG:
        resp = await shop.api.post(
            "/products",
            json={
                "sku": f"S-{len(ids)}",
                "name": name,
                "category": category,
                "price": price,
                "stock": stock,
            },
            headers=admin_headers,
        )
        ids.append(resp.json()["product_id"])
    await shop.api.delete(f"/products/{ids[-1]}", headers=admin_headers)
    fresh(await shop.api.get("/products", params={"min_position": await last_position(shop)}))
    live = CATALOG[:-1]

    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"sort": "name"}, sorted((c[0] for c in live), key=str.casefold)),
        ({"sort": "-price"}, [c[0] for c in sorted(live, key=lambda c: (-c[2],))]),
        (
            {"q": "açaí"},
            sorted([c[0] for c in live if "açaí" in c[0].casefold()], key=str.casefold),
        ),
        ({"q": "QUEIJO", "sort": "price"}, ["Pão de Queijo", "Queijo Minas"]),
        (
            {"category": "drinks", "in_stock": "true", "sort": "price"},
            ["Green Tea", "Coffee Beans"],
        ),
        (
            {"min_price": 1200, "max_price": 3190, "sort": "price"},
            [c[0] for c in sorted(live, key=lambda c: c[2]) if 1200 <= c[2] <= 3190],
        ),
        ({"in_stock": "false", "sort": "name"}, ["acai juice", "Cold Brew", "Queijo Minas"]),
    ]
    for params, expected in cases:
        for limit in (2, 5, 100):
            names, pages = await all_pages(shop, {**params, "limit": limit})
            if params.get("sort") == "-price":
                # equal prices tie-break by id: compare as price groups
                prices = {c[0]: c[2] for c in live}
                assert [prices[n] for n in names] == [prices[n] for n in expected]
                assert sorted(names) == sorted(expected)
            else:
                assert names == expected, (params, limit)
            assert pages == max(1, -(-len(expected) // limit)), (params, limit)
    assert "Tea Pot" not in (await all_pages(shop, {"limit": 100}))[0]


async def test_product_query_errors_are_problems(shop: Shop) -> None:
    api = shop.api
    assert_problem(await api.get("/products", params={"limit": 101}), 400)
    assert_problem(await api.get("/products", params={"cursor": "garbage!"}), 400)
    assert_problem(await api.get("/products", params={"min_position": "nope"}), 400)
    assert_problem(await api.get("/products", params={"sort": "color"}), 400)
    assert_problem(await api.get("/products/does-not-exist"), 404)
    empty = await api.get("/products", params={"sort": "name", "limit": 1})
    assert empty.status_code == 200
    assert empty.json() == {"items": [], "next_cursor": None}


async def test_own_orders_newest_first_with_exact_pages(shop: Shop) -> None:
    api = shop.api
    admin_headers = await admin_headers_of(shop)
    product_id = await create_product(api, admin_headers, stock=100)
    _, headers = await customer(api)
    order_ids: list[str] = []
    positions: list[str] = []
    for quantity in range(1, 6):
        billed = await api.post(
            "/orders",
            json={"lines": [{"product_id": product_id, "quantity": quantity}]},
            headers=headers,
        )
        order_ids.append(billed.json()["order_id"])
        positions.append(billed.json()["position"])
    # Orders land in different partitions: to see all five, wait for all their positions
    # (tokens joined with "." name every partition, the furthest entry of each wins).
    position = ".".join(positions)
    _, other_headers = await customer(api)
    await api.post(
        "/orders",
        json={"lines": [{"product_id": product_id, "quantity": 1}]},
        headers=other_headers,
    )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, "min_position": position}
        if cursor:
            params["cursor"] = cursor
        page = fresh(await api.get("/orders", params=params, headers=headers)).json()
        pages += 1
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(order_ids))
    assert pages == 3


async def test_customers_see_only_their_orders_and_no_admin_endpoints(shop: Shop) -> None:
    api = shop.api
    admin_headers = await admin_headers_of(shop)
    product_id = await create_product(api, admin_headers)
    _, alice = await customer(api)
    _, bob = await customer(api)
    billed = await api.post(
        "/orders", json={"lines": [{"product_id": product_id, "quantity": 1}]}, headers=alice
    )
    order_id, position = billed.json()["order_id"], billed.json()["position"]
    fresh(await api.get(f"/orders/{order_id}", params={"min_position": position}, headers=alice))
    assert_problem(await api.get(f"/orders/{order_id}", headers=bob), 404)
    fresh(await api.get(f"/orders/{order_id}", headers=admin_headers))
    bobs = fresh(await api.get("/orders", headers=bob)).json()
    assert bobs["items"] == []
    for path in ("/orders", f"/orders/{order_id}", "/accounts/me", "/audit", "/analytics/sales"):
        assert_problem(await api.get(path), 401)
    for path in (
        "/audit",
        "/audit/verify",
        "/analytics/sales",
        "/analytics/top-products",
        "/analytics/logins",
    ):
        assert_problem(await api.get(path, headers=bob), 403)


async def test_a_position_the_view_never_reaches_answers_stale(shop: Shop) -> None:
    account_id, email = await sign_up(shop.api)
    headers = bearer(await log_in(shop.api, email))
    resp = await shop.api.get(
        "/accounts/me", params={"min_position": "0-99999999999999-0"}, headers=headers
    )
    assert resp.status_code == 200
    assert resp.headers["x-view-stale"] == "true"
    assert resp.json()["id"] == account_id
