"""The request fingerprint that a creation's or a stock delta's result JSON keeps, so that an
Idempotency-Key reused for another request can be refused: plain data, no store."""

from __future__ import annotations

import msgspec

from app.commands.accounts import SignUp, decide_sign_up, sign_up_request
from app.commands.catalog import (
    AdjustStock,
    CreateProduct,
    decide_adjust_stock,
    decide_create_product,
    product_request,
    stock_request,
)
from app.commands.categories import CreateCategory, category_request, decide_create_category
from events.states import AccountState, CategoryState, ProductState

LIVE = ProductState(v=3, sku="MUG", name="Caneca", price=2590, currency="BRL", stock=4)


def result_of(result: str) -> dict[str, str]:
    decoded: dict[str, str] = msgspec.json.decode(result)
    return decoded


def test_a_stock_delta_keeps_its_fingerprint_beside_the_product_id() -> None:
    cmd = AdjustStock(product_id="p1", delta=5, reason="entrega")
    append = decide_adjust_stock(cmd, LIVE)
    assert result_of(append.result) == {"product_id": "p1", "request": stock_request(cmd)}


def test_another_delta_or_reason_is_another_stock_request() -> None:
    cmd = AdjustStock(product_id="p1", delta=5, reason="entrega")
    others = [
        msgspec.structs.replace(cmd, delta=6),
        msgspec.structs.replace(cmd, reason="quebra"),
        msgspec.structs.replace(cmd, product_id="p2"),
    ]
    assert stock_request(cmd) not in {stock_request(other) for other in others}


def test_a_product_created_under_a_new_id_is_the_same_request() -> None:
    cmd = CreateProduct(product_id="p1", sku="MUG", name="Caneca", price=2590)
    append = decide_create_product(cmd, ProductState())
    assert result_of(append.result) == {"product_id": "p1", "request": product_request(cmd)}
    assert product_request(msgspec.structs.replace(cmd, product_id="p2")) == product_request(cmd)
    assert product_request(msgspec.structs.replace(cmd, product_id=None)) == product_request(cmd)


def test_another_price_is_another_product_request() -> None:
    cmd = CreateProduct(sku="MUG", name="Caneca", price=2590)
    assert product_request(msgspec.structs.replace(cmd, price=100)) != product_request(cmd)


def test_a_category_keeps_its_fingerprint_beside_its_slug() -> None:
    cmd = CreateCategory(slug="casa", name="Casa")
    append = decide_create_category(cmd, CategoryState())
    assert result_of(append.result) == {"slug": "casa", "request": category_request(cmd)}
    assert category_request(msgspec.structs.replace(cmd, name="Lar")) != category_request(cmd)


def test_a_sign_up_is_fingerprinted_by_its_email_digest_and_role_only() -> None:
    cmd = SignUp(
        account_id="a1",
        email="ana@x.com",
        name="Ana",
        password_hash="$argon2id$h",
        sealed_email="pii1:email",
        sealed_name="pii1:name",
        email_digest="d1",
    )
    append = decide_sign_up(cmd, AccountState())
    assert result_of(append.result) == {
        "account_id": "a1",
        "request": sign_up_request("d1", "customer"),
    }
    assert "ana@x.com" not in append.result and "Ana" not in append.result
    assert sign_up_request("d2", "customer") != sign_up_request("d1", "customer")
    assert sign_up_request("d1", "seller") != sign_up_request("d1", "customer")
