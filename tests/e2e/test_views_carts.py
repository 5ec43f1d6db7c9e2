"""``GET /carts/{account_id}`` answers the cart from the read model: the owner and an admin
see it follow set / remove / checkout; anyone else gets a 404."""

from __future__ import annotations

from tests.e2e import create_product, customer
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    admin_headers,
    fresh,
    pg_database_fixture,
    shop_fixture,
)


async def test_the_cart_view_follows_the_cart_for_its_owner_and_an_admin(shop: Shop) -> None:
    api = shop.api
    boss = await admin_headers(shop)
    mug = await create_product(api, boss, stock=5)
    cup = await create_product(api, boss, stock=5)
    owner_id, owner = await customer(api)
    _, stranger = await customer(api)

    await api.put(f"/cart/items/{mug}", json={"quantity": 2}, headers=owner)
    changed = await api.put(f"/cart/items/{cup}", json={"quantity": 1}, headers=owner)
    position = changed.json()["position"]
    cart = fresh(
        await api.get(f"/carts/{owner_id}", params={"min_position": position}, headers=owner)
    ).json()
    assert cart["items"] == [
        {"product_id": mug, "quantity": 2},
        {"product_id": cup, "quantity": 1},
    ]

    removed = await api.delete(f"/cart/items/{mug}", headers=owner)
    position = removed.json()["position"]
    cart = fresh(
        await api.get(f"/carts/{owner_id}", params={"min_position": position}, headers=boss)
    ).json()
    assert cart["items"] == [{"product_id": cup, "quantity": 1}]

    placed = await api.post("/checkout", headers=owner)
    assert placed.status_code == 201, placed.text
    position = placed.json()["position"]
    cart = fresh(
        await api.get(f"/carts/{owner_id}", params={"min_position": position}, headers=owner)
    ).json()
    assert cart["items"] == []
    assert cart["last_order_id"] == placed.json()["order_id"]

    assert (await api.get(f"/carts/{owner_id}", headers=stranger)).status_code == 404
