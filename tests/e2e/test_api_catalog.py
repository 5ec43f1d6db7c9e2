"""Catalog administration over HTTP: admin only, SKU unique, stock never below zero."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from litestar.testing import AsyncTestClient

from events.states import CategoryState
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
from workers.state import verify_state

pytestmark = single_and_cluster


async def test_admin_creates_updates_restocks_and_deletes_a_product(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    made = await api.post("/categories", json={"slug": "casa", "name": "Casa"}, headers=boss)
    assert made.status_code == 201, made.text
    resp = await api.post(
        "/products",
        json={
            "sku": "MUG-1",
            "name": "Caneca",
            "description": "azul",
            "category": "casa",
            "price": 2590,
            "stock": 3,
        },
        headers=boss,
    )
    assert resp.status_code == 201, resp.text
    assert set(resp.json()) == {"product_id", "position"}
    product_id = resp.json()["product_id"]
    patched = await api.patch(f"/products/{product_id}", json={"price": 2990}, headers=boss)
    assert patched.status_code == 200 and patched.json()["product_id"] == product_id
    restocked = await api.post(
        f"/products/{product_id}/stock", json={"delta": 7, "reason": "entrega"}, headers=boss
    )
    assert restocked.status_code == 200
    state = await store.state(f"product:{product_id}")
    assert (state["price"], state["stock"], state["currency"]) == ("2990", "10", "BRL")
    deleted = await api.delete(f"/products/{product_id}", headers=boss)
    assert deleted.status_code == 200 and deleted.json()["position"]
    types = [e.type async for e in store.read_all()]
    assert [t for t in types if t.startswith(("Product", "Stock", "Category"))] == [
        "CategoryCreated",
        "ProductCreated",
        "ProductUpdated",
        "StockAdjusted",
        "ProductDeleted",
    ]


async def test_catalog_routes_need_the_admin_role(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    _, headers = await customer(api)
    before = await store.count()
    body = {"sku": "X-1", "name": "x", "price": 1}
    assert_problem(await api.post("/products", json=body, headers=headers), 403)
    assert_problem(await api.post("/products", json=body), 401)
    assert await store.count() == before


async def test_a_taken_sku_is_a_conflict(api: AsyncTestClient[Any], store: EventStore) -> None:
    boss = await admin(api, store)
    await create_product(api, boss, sku="SAME-SKU")
    resp = await api.post(
        "/products", json={"sku": "SAME-SKU", "name": "y", "price": 1}, headers=boss
    )
    assert assert_problem(resp, 409, "duplicate-sku")["field"] == "sku"


async def test_stock_never_goes_below_zero(api: AsyncTestClient[Any], store: EventStore) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=2)
    resp = await api.post(f"/products/{product_id}/stock", json={"delta": -3}, headers=boss)
    assert_problem(resp, 409, "insufficient-stock")
    assert (await store.state(f"product:{product_id}"))["stock"] == "2"


async def test_commands_on_an_unknown_product_are_404(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    assert_problem(await api.patch("/products/nope", json={"name": "x"}, headers=boss), 404)
    assert_problem(await api.delete("/products/nope", headers=boss), 404)
    assert_problem(await api.post("/products/nope/stock", json={"delta": 1}, headers=boss), 404)


async def test_a_legacy_id_is_reserved_for_the_product(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, legacy_id=4242)
    assert await store.owner_of("legacy_product", "4242") == f"product:{product_id}"
    resp = await api.post(
        "/products", json={"sku": "OTHER", "name": "y", "price": 1, "legacy_id": 4242}, headers=boss
    )
    assert_problem(resp, 409, "duplicate-legacy-id")
    [created] = await events_of_type(store, "ProductCreated")
    assert created.event.legacy_id == 4242


def _slug() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


async def test_categories_nest_and_products_name_only_live_ones(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    home, kitchen = _slug(), _slug()
    made = await api.post("/categories", json={"slug": home, "name": "Casa"}, headers=boss)
    assert made.status_code == 201, made.text
    child = {"slug": kitchen, "name": "Cozinha", "parent": home}
    assert (await api.post("/categories", json=child, headers=boss)).status_code == 201
    orphan = {"slug": _slug(), "name": "x", "parent": "no-such-parent"}
    refused = await api.post("/categories", json=orphan, headers=boss)
    assert assert_problem(refused, 422, "unknown-category")["field"] == "parent"
    unknown = {"sku": "S-1", "name": "y", "price": 1, "category": "no-such-category"}
    refused = await api.post("/products", json=unknown, headers=boss)
    assert assert_problem(refused, 422, "unknown-category")["field"] == "category"

    mug = await create_product(api, boss, category=home)
    renamed = await api.patch(f"/categories/{home}", json={"name": "Lar"}, headers=boss)
    assert renamed.status_code == 200, renamed.text
    in_use = await api.delete(f"/categories/{home}", headers=boss)
    assert "has 1 product and 1 child category" in assert_problem(in_use, 409)["detail"]
    moved = await api.patch(f"/products/{mug}", json={"category": kitchen}, headers=boss)
    assert moved.status_code == 200, moved.text
    same = await api.patch(f"/products/{mug}", json={"category": kitchen, "price": 3}, headers=boss)
    assert same.status_code == 200, same.text
    in_use = await api.delete(f"/categories/{kitchen}", headers=boss)
    assert "has 1 product and 0 child categories" in assert_problem(in_use, 409)["detail"]
    assert (await api.delete(f"/products/{mug}", headers=boss)).status_code == 200
    assert (await api.delete(f"/categories/{kitchen}", headers=boss)).status_code == 200
    assert (await api.delete(f"/categories/{home}", headers=boss)).status_code == 200
    gone = {"sku": "S-2", "name": "y", "price": 1, "category": home}
    assert_problem(await api.post("/products", json=gone, headers=boss), 422, "unknown-category")

    states = await store.load([f"category:{home}", f"category:{kitchen}"])
    assert all(s.deleted and s.products == 0 and s.children == 0 for s in states.values())
    assert (await verify_state(store)).ok


async def test_a_category_deleted_while_products_are_created_in_it_holds_none_of_them(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    """The race of a delete against creations that name the category: every product that
    was created counts in it, so the delete either is refused or came before them all."""
    boss = await admin(api, store)
    books = _slug()
    assert (
        await api.post("/categories", json={"slug": books, "name": "Livros"}, headers=boss)
    ).status_code == 201

    async def create(i: int) -> int:
        body = {"sku": f"B-{uuid.uuid4().hex[:8]}", "name": f"L{i}", "price": 1, "category": books}
        return (await api.post("/products", json=body, headers=boss)).status_code

    async def delete() -> int:
        return (await api.delete(f"/categories/{books}", headers=boss)).status_code

    codes = await asyncio.gather(
        *(create(i) for i in range(6)), delete(), *(create(i) for i in range(6))
    )
    created = [c for c in codes[:6] + codes[7:] if c == 201]
    assert set(codes[:6] + codes[7:]) <= {201, 422} and codes[6] in (200, 409)
    state = (await store.load([f"category:{books}"]))[f"category:{books}"]
    assert isinstance(state, CategoryState)
    assert state.products == len(created)
    assert not (state.deleted and created)
    assert (await verify_state(store)).ok


async def test_a_refused_product_leaves_its_category_count_as_it_was(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    """On the cluster the category is counted before the product's append: a creation
    refused after that (SKU or legacy id taken) takes its count back."""
    boss = await admin(api, store)
    home = _slug()
    assert (
        await api.post("/categories", json={"slug": home, "name": "Casa"}, headers=boss)
    ).status_code == 201
    await create_product(api, boss, sku="TAKEN", category=home, legacy_id=77)
    same_sku = {"sku": "TAKEN", "name": "y", "price": 1, "category": home}
    assert_problem(await api.post("/products", json=same_sku, headers=boss), 409, "duplicate-sku")
    same_legacy = {"sku": "FREE", "name": "y", "price": 1, "category": home, "legacy_id": 77}
    refused = await api.post("/products", json=same_legacy, headers=boss)
    assert_problem(refused, 409, "duplicate-legacy-id")

    state = (await store.load([f"category:{home}"]))[f"category:{home}"]
    assert isinstance(state, CategoryState) and state.products == 1
    assert await store.owner_of("sku", "FREE") is None
    assert (await verify_state(store)).ok
