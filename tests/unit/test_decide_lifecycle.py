"""The order lifecycle's decisions, as given events → when command → then events / error."""

from __future__ import annotations

import msgspec
import pytest

from app.commands.billing import BillLine
from app.commands.checkout import CartChanged, Checkout, Placed, decide_checkout, placed_of
from app.commands.errors import InsufficientStock, InvalidTransition, RefundTooLarge
from app.commands.orders import (
    ExpireOrder,
    IssueRefund,
    RecordPayment,
    decide_expire,
    decide_payment,
    decide_refund,
)
from events.states import AccountState, CartState, ProductState, decode_state, encode_state, fold
from events.store import AppendResult, Guard, StateChange
from events.types import (
    CartCheckedOut,
    CartItemSet,
    Event,
    OrderLine,
    OrderPaid,
    OrderPlaced,
    ProductCreated,
)

LINES = [OrderLine(product_id="mug", name="Caneca", quantity=2, unit_price=10, line_total=20)]
PLACED = OrderPlaced(order_id="o1", account_id="a1", lines=LINES, total=20, reserved_until=1000)
PAID = OrderPaid(order_id="o1", attempt=1, payment_id="auth1", amount=20, lines=LINES)


def given(*events: Event):  # type: ignore[no-untyped-def]
    return fold("order:o1", events)


def test_an_emptied_cart_survives_its_hash_encoding() -> None:
    cart = fold(
        "cart:a1",
        [
            CartItemSet(account_id="a1", product_id="mug", quantity=1),
            CartCheckedOut(account_id="a1", order_id="o1"),
        ],
    )
    assert cart == CartState(v=2, items=())
    assert decode_state("cart:a1", encode_state(cart)) == cart


def test_checkout_reserves_every_line_and_empties_the_cart() -> None:
    cart = fold("cart:a1", [CartItemSet(account_id="a1", product_id="mug", quantity=2)])
    mug = fold(
        "product:mug", [ProductCreated(product_id="mug", sku="M", name="Caneca", price=10, stock=5)]
    )
    cmd = Checkout(
        account_id="a1",
        lines=[BillLine(product_id="mug", quantity=2)],
        order_id="o1",
        reserved_until=1000,
    )
    append = decide_checkout(cmd, cart, AccountState(v=1), {"mug": mug}, given())
    assert append.events == [PLACED, CartCheckedOut(account_id="a1", order_id="o1")]
    assert append.state["product:mug"] == StateChange(incr={"stock": -2, "reserved": 2})
    assert Guard("product:mug", "stock", 2) in append.guards
    assert append.expect == {"order:o1": 0, "cart:a1": 1, "product:mug": 1}


def test_checkout_answers_the_placed_order_at_the_position_of_the_append() -> None:
    cart = fold("cart:a1", [CartItemSet(account_id="a1", product_id="mug", quantity=2)])
    mug = fold(
        "product:mug", [ProductCreated(product_id="mug", sku="M", name="Caneca", price=10, stock=5)]
    )
    cmd = Checkout(
        account_id="a1",
        lines=[BillLine(product_id="mug", quantity=2)],
        order_id="o1",
        reserved_until=1000,
    )
    append = decide_checkout(cmd, cart, AccountState(v=1), {"mug": mug}, given())
    result = AppendResult(entry_ids=[(2, "7-0")], result=append.result)
    assert placed_of(result) == Placed(
        order_id="o1",
        status="awaiting_payment",
        total=20,
        currency="BRL",
        reserved_until=1000,
        position=result.position,
    )


def test_a_checkout_record_stored_before_the_event_was_stored_replays_alike() -> None:
    old = {"order_id": "o1", "status": "awaiting_payment", "total": 20, "currency": "BRL"}
    lines = msgspec.to_builtins(LINES)
    record = msgspec.json.encode({**old, "reserved_until": 1000, "lines": lines}).decode()
    replay = AppendResult(entry_ids=[(2, "7-0")], duplicate=True, result=record)
    placed = placed_of(replay)
    assert (placed.order_id, placed.status, placed.total) == ("o1", "awaiting_payment", 20)
    assert (placed.reserved_until, placed.position) == (1000, replay.position)


def test_checkout_names_the_line_without_stock() -> None:
    cart = fold("cart:a1", [CartItemSet(account_id="a1", product_id="mug", quantity=9)])
    mug = ProductState(v=1, name="Caneca", price=10, stock=5)
    cmd = Checkout(account_id="a1", lines=[BillLine(product_id="mug", quantity=9)], order_id="o1")
    with pytest.raises(InsufficientStock) as refused:
        decide_checkout(cmd, cart, AccountState(v=1), {"mug": mug}, given())
    assert refused.value.field == "lines[0].quantity"


def test_checkout_of_a_cart_that_changed_since_it_was_read_is_retried() -> None:
    cart = fold("cart:a1", [CartItemSet(account_id="a1", product_id="mug", quantity=3)])
    cmd = Checkout(account_id="a1", lines=[BillLine(product_id="mug", quantity=2)], order_id="o1")
    with pytest.raises(CartChanged):
        decide_checkout(cmd, cart, AccountState(v=1), {"mug": ProductState()}, given())


def test_payment_turns_the_reservation_into_a_sale() -> None:
    cmd = RecordPayment(order_id="o1", attempt=1, payment_id="auth1", amount=20, at=999)
    append = decide_payment(cmd, given(PLACED))
    assert append.events == [msgspec.structs.replace(PAID, account_id="a1")]
    assert append.state["product:mug"] == StateChange(incr={"reserved": -2})
    assert append.expect == {"order:o1": 1}


def test_payment_at_the_deadline_is_refused_as_expired() -> None:
    cmd = RecordPayment(order_id="o1", attempt=1, payment_id="auth1", amount=20, at=1000)
    with pytest.raises(InvalidTransition) as refused:
        decide_payment(cmd, given(PLACED))
    assert refused.value.extra["current_status"] == "expired"


def test_expiry_returns_the_reserved_stock_and_is_refused_once_paid() -> None:
    append = decide_expire(ExpireOrder(order_id="o1", at=1000), given(PLACED))
    assert append.state["product:mug"] == StateChange(incr={"stock": 2, "reserved": -2})
    with pytest.raises(InvalidTransition) as refused:
        decide_expire(ExpireOrder(order_id="o1", at=1000), given(PLACED, PAID))
    assert refused.value.extra["current_status"] == "paid"


def test_refunds_never_exceed_what_was_captured() -> None:
    append = decide_refund(IssueRefund(order_id="o1", amount=5), given(PLACED, PAID))
    assert append.state["order:o1"].set["status"] == "partially_refunded"
    with pytest.raises(RefundTooLarge):
        decide_refund(IssueRefund(order_id="o1", amount=21), given(PLACED, PAID))
