"""``Idempotency-Key`` on the routes that add or create (stock deltas, products, categories,
sellers, sign-up): a retry gets the first answer and the effect happens once; a key reused
for another request is refused; each actor's keys are its own. On one node and on the
Redis Cluster, where the record lives with the command's aggregate."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from events.store import EventStore
from tests.e2e import (
    PASSWORD,
    admin,
    api_fixture,  # noqa: F401
    assert_problem,
    create_product,
    events_of_type,
    new_email,
)
from tests.support.cluster import single_and_cluster

pytestmark = single_and_cluster

KEYED_OPERATIONS = {"adjustStock", "createProduct", "createCategory", "createSeller", "signUp"}

ON_ONE_NODE = (
    "on a Redis Cluster the record lives in the partition of the SKU, slug or email "
    "(docs/architecture.md, 'Idempotency-Key over HTTP'), so a reuse that changes it is not seen"
)


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def new_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


def new_slug() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


async def stock(store: EventStore, product_id: str) -> int:
    return int((await store.state(f"product:{product_id}"))["stock"])


async def sellers_created(store: EventStore) -> int:
    return sum(e.event.role == "seller" for e in await events_of_type(store, "AccountCreated"))


# -- POST /products/{id}/stock ------------------------------------------------------------


async def test_a_stock_delta_retried_with_its_key_moves_the_stock_once(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=10)
    body = {"delta": 5, "reason": "entrega"}
    first = await api.post(f"/products/{product_id}/stock", json=body, headers=keyed(boss, "s-1"))
    again = await api.post(f"/products/{product_id}/stock", json=body, headers=keyed(boss, "s-1"))
    assert first.status_code == again.status_code == 200, again.text
    assert first.content == again.content
    assert len(await events_of_type(store, "StockAdjusted")) == 1
    assert await stock(store, product_id) == 15


async def test_parallel_stock_retries_with_one_key_move_the_stock_once(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=10)
    responses = await asyncio.gather(
        *(
            api.post(
                f"/products/{product_id}/stock", json={"delta": -1}, headers=keyed(boss, "click")
            )
            for _ in range(5)
        )
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert len(await events_of_type(store, "StockAdjusted")) == 1
    assert await stock(store, product_id) == 9


async def test_a_stock_key_reused_for_another_delta_is_refused(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    product_id = await create_product(api, boss, stock=10)
    path = f"/products/{product_id}/stock"
    assert (await api.post(path, json={"delta": 5}, headers=keyed(boss, "s-1"))).status_code == 200
    before = await store.count()
    other = await api.post(path, json={"delta": 7}, headers=keyed(boss, "s-1"))
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before
    assert await stock(store, product_id) == 15


async def test_stock_keys_are_per_actor(api: AsyncTestClient[Any], store: EventStore) -> None:
    boss, other_boss = await admin(api, store), await admin(api, store)
    product_id = await create_product(api, boss, stock=10)
    for headers in (boss, other_boss):
        resp = await api.post(
            f"/products/{product_id}/stock", json={"delta": 2}, headers=keyed(headers, "s-1")
        )
        assert resp.status_code == 200, resp.text
    assert len(await events_of_type(store, "StockAdjusted")) == 2
    assert await stock(store, product_id) == 14


async def test_stock_keys_are_per_product(api: AsyncTestClient[Any], store: EventStore) -> None:
    boss = await admin(api, store)
    mug, tee = await create_product(api, boss, stock=1), await create_product(api, boss, stock=1)
    for product_id in (mug, tee):
        resp = await api.post(
            f"/products/{product_id}/stock", json={"delta": 2}, headers=keyed(boss, "s-1")
        )
        assert resp.status_code == 200, resp.text
    assert (await stock(store, mug), await stock(store, tee)) == (3, 3)


# -- POST /products -----------------------------------------------------------------------


async def test_a_product_created_again_with_its_key_is_the_first_one(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    slug = new_slug()
    made = await api.post("/categories", json={"slug": slug, "name": "Casa"}, headers=boss)
    assert made.status_code == 201, made.text
    body = {"sku": new_sku(), "name": "Caneca", "price": 2590, "category": slug, "legacy_id": 77}
    first = await api.post("/products", json=body, headers=keyed(boss, "p-1"))
    again = await api.post("/products", json=body, headers=keyed(boss, "p-1"))
    assert first.status_code == again.status_code == 201, again.text
    assert first.content == again.content
    [created] = await events_of_type(store, "ProductCreated")
    assert created.event.product_id == first.json()["product_id"]
    assert (await store.state(f"category:{slug}"))["products"] == "1"


async def test_parallel_product_retries_with_one_key_create_one_product(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    slug = new_slug()
    made = await api.post("/categories", json={"slug": slug, "name": "Casa"}, headers=boss)
    assert made.status_code == 201, made.text
    body = {"sku": new_sku(), "name": "Caneca", "price": 2590, "category": slug}
    responses = await asyncio.gather(
        *(api.post("/products", json=body, headers=keyed(boss, "click")) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["product_id"] for r in responses}) == 1
    assert len(await events_of_type(store, "ProductCreated")) == 1
    assert (await store.state(f"category:{slug}"))["products"] == "1"


async def test_a_product_key_reused_for_another_product_is_refused(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    body = {"sku": new_sku(), "name": "Caneca", "price": 2590}
    assert (await api.post("/products", json=body, headers=keyed(boss, "p-1"))).status_code == 201
    before = await store.count()
    other = await api.post("/products", json={**body, "price": 100}, headers=keyed(boss, "p-1"))
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before


async def test_a_product_key_reused_for_another_sku_is_refused_on_one_node(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    if store.clustered:
        pytest.skip(ON_ONE_NODE)
    boss = await admin(api, store)
    body = {"sku": new_sku(), "name": "Caneca", "price": 2590}
    assert (await api.post("/products", json=body, headers=keyed(boss, "p-1"))).status_code == 201
    other = await api.post("/products", json={**body, "sku": new_sku()}, headers=keyed(boss, "p-1"))
    assert_problem(other, 422, "idempotency-key-reused")
    assert len(await events_of_type(store, "ProductCreated")) == 1


async def test_product_keys_are_per_actor(api: AsyncTestClient[Any], store: EventStore) -> None:
    boss, other_boss = await admin(api, store), await admin(api, store)
    ids = set()
    for headers in (boss, other_boss):
        body = {"sku": new_sku(), "name": "Caneca", "price": 2590}
        resp = await api.post("/products", json=body, headers=keyed(headers, "p-1"))
        assert resp.status_code == 201, resp.text
        ids.add(resp.json()["product_id"])
    assert len(ids) == 2
    assert len(await events_of_type(store, "ProductCreated")) == 2


async def test_a_seller_and_an_admin_have_their_own_product_keys(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    email = new_email()
    opened = await api.post(
        "/sellers", json={"name": "Loja", "email": email, "password": PASSWORD}, headers=boss
    )
    assert opened.status_code == 201, opened.text
    login = await api.post("/auth/login", json={"email": email, "password": PASSWORD})
    shop = {"Authorization": f"Bearer {login.json()['access_token']}"}
    body = {"sku": new_sku(), "name": "Caneca", "price": 2590}
    mine = await api.post("/products", json=body, headers=keyed(shop, "p-1"))
    assert mine.status_code == 201, mine.text
    theirs = await api.post(
        "/products", json={**body, "sku": new_sku()}, headers=keyed(boss, "p-1")
    )
    assert theirs.status_code == 201, theirs.text
    created = {e.event.product_id: e.event for e in await events_of_type(store, "ProductCreated")}
    assert created[mine.json()["product_id"]].seller_id == opened.json()["seller_id"]
    assert created[theirs.json()["product_id"]].seller_id is None


# -- POST /categories ---------------------------------------------------------------------


async def test_a_category_created_again_with_its_key_answers_the_first_time(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    body = {"slug": new_slug(), "name": "Casa"}
    first = await api.post("/categories", json=body, headers=keyed(boss, "c-1"))
    again = await api.post("/categories", json=body, headers=keyed(boss, "c-1"))
    assert first.status_code == again.status_code == 201, again.text
    assert first.content == again.content
    assert len(await events_of_type(store, "CategoryCreated")) == 1


async def test_a_category_key_reused_for_another_name_is_refused(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    body = {"slug": new_slug(), "name": "Casa"}
    assert (await api.post("/categories", json=body, headers=keyed(boss, "c-1"))).status_code == 201
    before = await store.count()
    other = await api.post("/categories", json={**body, "name": "Lar"}, headers=keyed(boss, "c-1"))
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before


async def test_a_category_key_reused_for_another_slug_is_refused_on_one_node(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    if store.clustered:
        pytest.skip(ON_ONE_NODE)
    boss = await admin(api, store)
    body = {"slug": new_slug(), "name": "Casa"}
    assert (await api.post("/categories", json=body, headers=keyed(boss, "c-1"))).status_code == 201
    other = await api.post(
        "/categories", json={**body, "slug": new_slug()}, headers=keyed(boss, "c-1")
    )
    assert_problem(other, 422, "idempotency-key-reused")
    assert len(await events_of_type(store, "CategoryCreated")) == 1


async def test_category_keys_are_per_actor(api: AsyncTestClient[Any], store: EventStore) -> None:
    boss, other_boss = await admin(api, store), await admin(api, store)
    for headers in (boss, other_boss):
        body = {"slug": new_slug(), "name": "Casa"}
        resp = await api.post("/categories", json=body, headers=keyed(headers, "c-1"))
        assert resp.status_code == 201, resp.text
    assert len(await events_of_type(store, "CategoryCreated")) == 2


# -- POST /sellers ------------------------------------------------------------------------


async def test_a_seller_opened_again_with_its_key_is_the_first_one(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    body = {"name": "Loja", "email": new_email(), "password": PASSWORD}
    first = await api.post("/sellers", json=body, headers=keyed(boss, "v-1"))
    again = await api.post("/sellers", json=body, headers=keyed(boss, "v-1"))
    assert first.status_code == again.status_code == 201, again.text
    assert first.content == again.content
    assert await sellers_created(store) == 1


async def test_a_seller_key_reused_for_another_email_is_refused_on_one_node(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    if store.clustered:
        pytest.skip(ON_ONE_NODE)
    boss = await admin(api, store)
    body = {"name": "Loja", "email": new_email(), "password": PASSWORD}
    assert (await api.post("/sellers", json=body, headers=keyed(boss, "v-1"))).status_code == 201
    before = await store.count()
    other = await api.post(
        "/sellers", json={**body, "email": new_email()}, headers=keyed(boss, "v-1")
    )
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before


async def test_seller_keys_are_per_admin(api: AsyncTestClient[Any], store: EventStore) -> None:
    boss, other_boss = await admin(api, store), await admin(api, store)
    for headers in (boss, other_boss):
        body = {"name": "Loja", "email": new_email(), "password": PASSWORD}
        resp = await api.post("/sellers", json=body, headers=keyed(headers, "v-1"))
        assert resp.status_code == 201, resp.text
    assert await sellers_created(store) == 2


# -- POST /accounts -----------------------------------------------------------------------


async def test_a_sign_up_retried_with_its_key_gets_the_first_account(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    body = {"name": "Ana", "email": new_email(), "password": PASSWORD}
    first = await api.post("/accounts", json=body, headers={"Idempotency-Key": "a-1"})
    again = await api.post("/accounts", json=body, headers={"Idempotency-Key": "a-1"})
    assert first.status_code == again.status_code == 201, again.text
    assert first.content == again.content
    assert len(await events_of_type(store, "AccountCreated")) == 1


async def test_a_sign_up_without_a_key_is_still_refused_as_a_duplicate_email(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    body = {"name": "Ana", "email": new_email(), "password": PASSWORD}
    assert (await api.post("/accounts", json=body)).status_code == 201
    assert_problem(await api.post("/accounts", json=body), 409, "duplicate-email")


async def test_a_sign_up_key_reused_for_another_email_is_refused_on_one_node(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    if store.clustered:
        pytest.skip(ON_ONE_NODE)
    body = {"name": "Ana", "email": new_email(), "password": PASSWORD}
    ok = await api.post("/accounts", json=body, headers={"Idempotency-Key": "a-1"})
    assert ok.status_code == 201, ok.text
    before = await store.count()
    other = await api.post(
        "/accounts", json={**body, "email": new_email()}, headers={"Idempotency-Key": "a-1"}
    )
    assert assert_problem(other, 422, "idempotency-key-reused")["field"] == "Idempotency-Key"
    assert await store.count() == before


async def test_a_sign_up_key_does_not_replay_a_seller_opened_under_it(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    seller = {"name": "Loja", "email": new_email(), "password": PASSWORD}
    assert (await api.post("/sellers", json=seller, headers=keyed(boss, "k"))).status_code == 201
    taken = await api.post("/accounts", json=seller, headers={"Idempotency-Key": "k"})
    assert_problem(taken, 409, "duplicate-email")


# -- the schema ---------------------------------------------------------------------------


async def test_the_schema_lists_the_idempotency_key_on_each_keyed_route(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    from tests.e2e.test_api_idempotent_orders import KEYED_OPERATIONS as ORDER_OPERATIONS

    doc = (await api.get("/schema/openapi.json")).json()
    operations = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    for name in KEYED_OPERATIONS | ORDER_OPERATIONS:
        op = operations[name]
        headers = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in headers, name
        assert "422" in op["responses"], name
