"""Sellers and categories end to end (issue 15): HTTP → log → projector → views → HTTP, on
the real servers, each test ending with ``verify`` of the three views."""

from __future__ import annotations

from typing import Any

from tests.e2e import assert_problem, bearer, create_product, customer, log_in, new_email
from tests.e2e.test_views_support import (  # noqa: F401
    VIEWS,
    Shop,
    admin_headers,
    fresh,
    last_position,
    pg_database_fixture,
    shop_fixture,
)
from workers.verify import verify_view


async def seller(shop: Shop, admin: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A seller opened by the admin and logged in: (seller id, auth headers)."""
    email = new_email()
    resp = await shop.api.post(
        "/sellers",
        json={"name": "Loja", "email": email, "password": "correct horse battery"},
        headers=admin,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["seller_id"], bearer(await log_in(shop.api, email))


async def order(shop: Shop, headers: dict[str, str], lines: list[tuple[str, int]]) -> None:
    resp = await shop.api.post(
        "/orders",
        json={"lines": [{"product_id": p, "quantity": q} for p, q in lines]},
        headers=headers,
    )
    assert resp.status_code == 201, resp.text


async def views_verify(shop: Shop) -> None:
    results = [await verify_view(shop.settings, name) for name in VIEWS]
    assert [(r.view, r.ok, r.differences) for r in results] == [(n, True, []) for n in VIEWS]


async def test_a_seller_cannot_touch_another_sellers_product(shop: Shop) -> None:
    admin = await admin_headers(shop)
    ana_id, ana = await seller(shop, admin)
    bia_id, bia = await seller(shop, admin)
    mug = await create_product(shop.api, ana, name="Mug")
    tea = await create_product(shop.api, admin, name="Tea")
    for product in (mug, tea):
        for resp in (
            await shop.api.patch(f"/products/{product}", json={"price": 1}, headers=bia),
            await shop.api.post(f"/products/{product}/stock", json={"delta": 1}, headers=bia),
            await shop.api.delete(f"/products/{product}", headers=bia),
        ):
            assert_problem(resp, 404, "product-not-found")
    assert (await shop.api.patch(f"/products/{mug}", json={"price": 7}, headers=ana)).is_success
    stolen = {"sku": "X-1", "name": "x", "price": 1, "seller_id": ana_id}
    assert_problem(await shop.api.post("/products", json=stolen, headers=bia), 403)
    state = await shop.store.state(f"product:{mug}")
    assert (state["seller_id"], state["price"]) == (ana_id, "7")

    position = await last_position(shop)
    listed = fresh(await shop.api.get(f"/products/{mug}", params={"min_position": position}))
    assert listed.json()["seller_id"] == ana_id
    sellers = fresh(
        await shop.api.get("/sellers", params={"min_position": position}, headers=admin)
    )
    assert {s["id"] for s in sellers.json()["items"]} == {ana_id, bia_id}
    assert_problem(await shop.api.get("/sellers", headers=ana), 403)
    await views_verify(shop)


async def test_a_sellers_analytics_show_only_its_own_products(shop: Shop) -> None:
    admin = await admin_headers(shop)
    ana_id, ana = await seller(shop, admin)
    bia_id, bia = await seller(shop, admin)
    mug = await create_product(shop.api, ana, name="Mug", price=1000)
    pot = await create_product(shop.api, bia, name="Pot", price=300)
    tea = await create_product(shop.api, admin, name="Tea", price=500)
    _, buyer = await customer(shop.api)
    await order(shop, buyer, [(mug, 2), (pot, 1), (tea, 1)])
    await order(shop, buyer, [(pot, 4)])
    params = {"min_position": await last_position(shop)}

    async def sales(headers: dict[str, str], **extra: str) -> dict[str, Any]:
        resp = fresh(await shop.api.get("/analytics/sales", params=params | extra, headers=headers))
        [day] = resp.json()
        return {k: day[k] for k in ("orders", "items", "revenue")}

    async def top(headers: dict[str, str], **extra: str) -> list[str]:
        resp = await shop.api.get("/analytics/top-products", params=params | extra, headers=headers)
        return [p["product_id"] for p in fresh(resp).json()]

    assert await sales(ana) == {"orders": 1, "items": 2, "revenue": 2000}
    assert await sales(bia) == {"orders": 2, "items": 5, "revenue": 1500}
    assert await sales(admin) == {"orders": 2, "items": 8, "revenue": 4000}
    assert await sales(admin, seller_id=bia_id) == await sales(bia)
    assert await top(ana) == [mug]
    assert await top(admin, seller_id=bia_id) == [pot]
    assert set(await top(admin)) == {mug, pot, tea}
    denied = await shop.api.get("/analytics/sales", params={"seller_id": bia_id}, headers=ana)
    assert_problem(denied, 403)
    assert_problem(await shop.api.get("/analytics/funnel", headers=ana), 403)
    rows = await shop.pool.fetch(
        "SELECT ps.seller_id, sum(f.revenue) AS revenue FROM dw.fact_order_line f"
        " JOIN dw.product_seller ps USING (product_id) GROUP BY ps.seller_id"
    )
    assert {r["seller_id"]: r["revenue"] for r in rows} == {ana_id: 2000, bia_id: 1500}
    assert await shop.pool.fetchval("SELECT count(*) FROM dw.dim_seller") == 2
    await views_verify(shop)


async def test_an_unknown_category_is_refused_naming_the_field(shop: Shop) -> None:
    admin = await admin_headers(shop)
    before = await shop.store.count()
    body = {"sku": "B-1", "name": "Livro", "price": 100, "category": "books"}
    refused = assert_problem(await shop.api.post("/products", json=body, headers=admin), 422)
    assert refused["field"] == "category"
    orphan = {"slug": "novels", "name": "Novels", "parent": "books"}
    refused = assert_problem(await shop.api.post("/categories", json=orphan, headers=admin), 422)
    assert refused["field"] == "parent"
    assert await shop.store.count() == before
    await shop.api.post("/categories", json={"slug": "books", "name": "Books"}, headers=admin)
    product = await create_product(shop.api, admin, category="books")
    in_use = await shop.api.delete("/categories/books", headers=admin)
    refused = assert_problem(in_use, 409, "category-in-use")
    assert refused["field"] == "slug"
    assert refused["detail"] == "category 'books' has 1 product and 0 child categories"
    assert (await shop.api.delete(f"/products/{product}", headers=admin)).is_success
    assert (await shop.api.delete("/categories/books", headers=admin)).is_success
    body = {"sku": "B-2", "name": "Livro", "price": 100, "category": "books"}
    created = await shop.api.post("/products", json=body, headers=admin)
    assert assert_problem(created, 422, "unknown-category")["field"] == "category"


async def test_the_tree_counts_products_and_a_rename_shows_in_listings_and_warehouse(
    shop: Shop,
) -> None:
    admin = await admin_headers(shop)
    for body in (
        {"slug": "books", "name": "Books"},
        {"slug": "novels", "name": "Novels", "parent": "books"},
        {"slug": "music", "name": "Music"},
    ):
        resp = await shop.api.post("/categories", json=body, headers=admin)
        assert resp.status_code == 201, resp.text
    await create_product(shop.api, admin, category="books")
    await create_product(shop.api, admin, category="novels")
    novel = await create_product(shop.api, admin, category="novels")
    gone = await create_product(shop.api, admin, category="novels")
    await shop.api.delete(f"/products/{gone}", headers=admin)
    renamed = await shop.api.patch("/categories/novels", json={"name": "Romances"}, headers=admin)
    assert renamed.status_code == 200, renamed.text
    params = {"min_position": await last_position(shop)}

    tree = fresh(await shop.api.get("/categories", params=params)).json()
    assert [(n["slug"], n["products"], n["total_products"]) for n in tree] == [
        ("books", 1, 3),
        ("music", 0, 0),
    ]
    [child] = tree[0]["children"]
    assert (child["slug"], child["name"], child["products"]) == ("novels", "Romances", 2)
    listed = fresh(await shop.api.get("/products", params=params | {"category": "novels"}))
    assert {p["category_name"] for p in listed.json()["items"]} == {"Romances"}
    one = fresh(await shop.api.get(f"/products/{novel}", params=params)).json()
    assert (one["category"], one["category_name"]) == ("novels", "Romances")

    fresh(await shop.api.get("/analytics/sales", params=params, headers=admin))
    versions = await shop.pool.fetch(
        "SELECT version, name, valid_from, valid_to, is_current FROM dw.dim_category"
        " WHERE slug = 'novels' ORDER BY version"
    )
    assert [(v["version"], v["name"], v["is_current"]) for v in versions] == [
        (1, "Novels", False),
        (2, "Romances", True),
    ]
    assert versions[0]["valid_to"] == versions[1]["valid_from"]
    shown = await shop.pool.fetchval(
        "SELECT c.name FROM dw.dim_product p JOIN dw.dim_category c"
        " ON c.slug = p.category AND c.is_current WHERE p.product_id = $1",
        novel,
    )
    assert shown == "Romances"
    await views_verify(shop)
