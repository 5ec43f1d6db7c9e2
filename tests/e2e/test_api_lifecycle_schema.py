"""Schemathesis over the lifecycle routes of a live server: no 5xx, responses match the schema."""

from __future__ import annotations

from tests.e2e.test_api_server import LiveServer, live  # noqa: F401
from tests.support.fuzz import fuzz_operations

LIFECYCLE_OPERATIONS = {
    "getCart",
    "setCartItem",
    "removeCartItem",
    "checkout",
    "payOrder",
    "cancelOrder",
    "refundOrder",
    "shipOrder",
    "markOrderDelivered",
    "verCarrinho",
    "porNoCarrinho",
    "tirarDoCarrinho",
    "pagarPedido",
    "cancelarPedido",
    "paymentWebhook",
}


def test_schemathesis_finds_no_server_error_on_the_lifecycle_routes(live: LiveServer) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {live.admin_token()}"}
    fuzz_operations(live.url, LIFECYCLE_OPERATIONS, headers, max_examples=12)
