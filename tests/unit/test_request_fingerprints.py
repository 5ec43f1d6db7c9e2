"""The request fingerprint that a creation's, a stock delta's, a checkout's, a cancellation's
or a refund's result JSON keeps, so that an Idempotency-Key reused for another request can be
refused: plain data, no store."""

from __future__ import annotations

import msgspec
import pytest

from app.commands.accounts import SignUp, decide_sign_up, sign_up_request
from app.commands.base import checked_replay, result_json
from app.commands.billing import BillLine
from app.commands.catalog import (
    AdjustStock,
    CreateProduct,
    decide_adjust_stock,
    decide_create_product,
    product_request,
    stock_request,
)
from app.commands.categories import CreateCategory, category_request, decide_create_category
from app.commands.checkout import CHECKOUT, Checkout, checkout_request, decide_checkout
from app.commands.errors import IdempotencyKeyReused
from app.commands.orders import (
    CANCEL_ORDER,
    ISSUE_REFUND,
    CancelOrder,
    IssueRefund,
    cancel_request,
    decide_cancel_order,
    decide_refund,
    refund_request,
)
from events.states import AccountState, CategoryState, ProductState, fold
from events.store import AppendResult
from events.types import CartItemSet, OrderLine, OrderPaid, OrderPlaced, ProductCreated

LIVE = ProductState(v=3, sku="MUG", name="Caneca", price=2590, currency="BRL", stock=4)


LINES = [OrderLine(product_id="mug", name="Caneca", quantity=2, unit_price=10, line_total=20)]
PLACED = OrderPlaced(order_id="o1", account_id="a1", lines=LINES, total=20, reserved_until=1000)
PAID = OrderPaid(order_id="o1", attempt=1, payment_id="auth1", amount=20, lines=LINES)


def result_of(result: str) -> dict[str, str]:
    decoded: dict[str, str] = msgspec.json.decode(result)
    return decoded


def replay_of(result: str) -> AppendResult:
    return AppendResult(entry_ids=[(0, "1-0")], duplicate=True, result=result)


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


def test_a_record_without_a_fingerprint_replays_as_it_is() -> None:
    old = replay_of(result_json({"order_id": "o1", "status": "cancelled"}))
    assert checked_replay(old, "any") is old


def test_a_record_of_another_request_is_refused_naming_the_key() -> None:
    with pytest.raises(IdempotencyKeyReused) as refused:
        checked_replay(replay_of(result_json({"request": "a"})), "b")
    assert refused.value.field == "Idempotency-Key"


def test_a_checkout_keeps_the_fingerprint_of_its_lines_only() -> None:
    cart = fold("cart:a1", [CartItemSet(account_id="a1", product_id="mug", quantity=2)])
    mug = fold(
        "product:mug", [ProductCreated(product_id="mug", sku="M", name="Caneca", price=10, stock=5)]
    )
    cmd = Checkout(account_id="a1", lines=[BillLine(product_id="mug", quantity=2)], order_id="o1")
    append = decide_checkout(cmd, cart, AccountState(v=1), {"mug": mug}, fold("order:o1", []))
    assert result_of(append.result)["request"] == checkout_request(cmd.lines)
    assert checkout_request(LINES) == checkout_request(cmd.lines)
    other = [BillLine(product_id="mug", quantity=3)]
    assert checkout_request(other) != checkout_request(cmd.lines)


def test_a_checkout_retried_on_the_cart_it_emptied_gets_its_first_answer() -> None:
    replay = replay_of(result_json({"order_id": "o1", "request": checkout_request(LINES)}))
    emptied = Checkout(account_id="a1", lines=[], order_id="o2", reserved_until=2000)
    same = Checkout(account_id="a1", lines=[BillLine(product_id="mug", quantity=2)])
    assert CHECKOUT.replayed(emptied, replay) is replay
    assert CHECKOUT.replayed(same, replay) is replay
    with pytest.raises(IdempotencyKeyReused):
        CHECKOUT.replayed(
            Checkout(account_id="a1", lines=[BillLine(product_id="tee", quantity=1)]), replay
        )


def test_a_cancel_is_fingerprinted_by_its_account_and_its_reason() -> None:
    cmd = CancelOrder(order_id="o1", account_id="a1", reason="late")
    append = decide_cancel_order(cmd, fold("order:o1", [PLACED]))
    assert result_of(append.result)["request"] == cancel_request(cmd)
    others = [
        msgspec.structs.replace(cmd, reason="cheaper"),
        msgspec.structs.replace(cmd, account_id="admin1", by_admin=True),
    ]
    for other in others:
        with pytest.raises(IdempotencyKeyReused):
            CANCEL_ORDER.replayed(other, replay_of(append.result))


def test_a_refund_is_fingerprinted_by_its_amount_and_its_reason() -> None:
    cmd = IssueRefund(order_id="o1", amount=5, reason="scratched")
    append = decide_refund(cmd, fold("order:o1", [PLACED, PAID]))
    assert result_of(append.result)["request"] == refund_request(cmd)
    assert ISSUE_REFUND.replayed(cmd, replay_of(append.result)).result == append.result
    for other in (
        msgspec.structs.replace(cmd, amount=6),
        msgspec.structs.replace(cmd, reason="late"),
    ):
        with pytest.raises(IdempotencyKeyReused):
            ISSUE_REFUND.replayed(other, replay_of(append.result))
