"""Schemathesis over the seller and category write routes of issue 15, and the product
routes a seller now shares, on the production server (test_api_server's ``live``)."""

from __future__ import annotations

import httpx

from tests.e2e import PASSWORD, new_email
from tests.e2e.test_api_server import LiveServer, live  # noqa: F401
from tests.support.fuzz import fuzz_operations

ADMIN_OPERATIONS = {"createSeller", "createCategory", "renameCategory", "deleteCategory"}
SELLER_OPERATIONS = {"createProduct", "updateProduct", "deleteProduct", "adjustStock"}


def test_schemathesis_finds_no_server_error_in_the_seller_and_category_routes(
    live: LiveServer,  # noqa: F811
) -> None:
    admin = {"Authorization": f"Bearer {live.admin_token()}"}
    fuzz_operations(live.url, ADMIN_OPERATIONS, admin, max_examples=12)


def test_schemathesis_finds_no_server_error_in_the_product_routes_as_a_seller(
    live: LiveServer,  # noqa: F811
) -> None:
    admin = {"Authorization": f"Bearer {live.admin_token()}"}
    email = new_email()
    body = {"name": "Loja", "email": email, "password": PASSWORD}
    assert httpx.post(f"{live.url}/sellers", json=body, headers=admin).status_code == 201
    resp = httpx.post(f"{live.url}/auth/login", json={"email": email, "password": PASSWORD})
    seller = {"Authorization": f"Bearer {resp.json()['access_token']}"}
    fuzz_operations(live.url, SELLER_OPERATIONS, seller, max_examples=12)
