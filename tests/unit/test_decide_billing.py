"""Billing decisions with plain data: prices from state, stock guarded, errors name the line."""

from __future__ import annotations

import msgspec
import pytest

from app.commands.billing import (
    BillLine,
    BillOrder,
    Receipt,
    decide_bill_order,
    fingerprint,
    receipt_of,
)
from app.commands.errors import AccountNotFound, InsufficientStock, MixedCurrencies, UnknownProduct
from events.states import AccountState, ProductState
from events.store import AppendResult, Guard
from events.types import OrderBilled, OrderLine

ACCOUNT = AccountState(v=1, email="a@b.co", role="customer")
MUG = ProductState(v=2, name="Caneca", price=2590, currency="BRL", stock=5)
TEE = ProductState(v=7, name="Camiseta", price=4990, currency="BRL", stock=1)


def order(*lines: tuple[str, int]) -> BillOrder:
    return BillOrder(
        account_id="a1",
        order_id="o1",
        lines=[BillLine(product_id=p, quantity=q) for p, q in lines],
    )


def test_lines_are_priced_from_the_catalog_and_totalled() -> None:
    append, receipt = decide_bill_order(
        order(("mug", 2), ("tee", 1)), ACCOUNT, {"mug": MUG, "tee": TEE}
    )
    assert receipt.lines == [
        OrderLine(product_id="mug", name="Caneca", quantity=2, unit_price=2590, line_total=5180),
        OrderLine(product_id="tee", name="Camiseta", quantity=1, unit_price=4990, line_total=4990),
    ]
    assert (receipt.total, receipt.currency) == (10170, "BRL")
    [event] = append.events
    assert isinstance(event, OrderBilled) and event.total == 10170


def test_the_append_expects_product_versions_and_guards_stock_as_a_counter() -> None:
    append, _ = decide_bill_order(order(("mug", 2), ("mug", 1)), ACCOUNT, {"mug": MUG})
    assert append.expect == {"order:o1": 0, "product:mug": 2}
    assert append.exists == ["account:a1"]
    assert append.guards == [Guard("product:mug", "stock", 3)]
    assert append.state["product:mug"].incr == {"stock": -3}


def test_a_missing_account_is_refused() -> None:
    with pytest.raises(AccountNotFound):
        decide_bill_order(order(("mug", 1)), AccountState(), {"mug": MUG})


@pytest.mark.parametrize("state", [ProductState(), msgspec.structs.replace(MUG, deleted=True)])
def test_an_unknown_or_deleted_product_names_its_line(state: ProductState) -> None:
    with pytest.raises(UnknownProduct) as caught:
        decide_bill_order(order(("mug", 1), ("gone", 1)), ACCOUNT, {"mug": MUG, "gone": state})
    assert caught.value.field == "lines[1].product_id"


def test_insufficient_stock_names_the_product() -> None:
    with pytest.raises(InsufficientStock) as caught:
        decide_bill_order(order(("tee", 2)), ACCOUNT, {"tee": TEE})
    assert caught.value.extra["product_id"] == "tee"


def test_products_in_two_currencies_cannot_share_an_order() -> None:
    usd = msgspec.structs.replace(TEE, currency="USD")
    with pytest.raises(MixedCurrencies):
        decide_bill_order(order(("mug", 1), ("tee", 1)), ACCOUNT, {"mug": MUG, "tee": usd})


def test_the_fingerprint_tells_orders_apart() -> None:
    assert fingerprint(order(("mug", 1))) == fingerprint(order(("mug", 1)))
    assert fingerprint(order(("mug", 1))) != fingerprint(order(("mug", 2)))


def test_the_receipt_is_the_stored_order_at_the_position_of_the_append() -> None:
    append, event = decide_bill_order(order(("mug", 2)), ACCOUNT, {"mug": MUG})
    result = AppendResult(entry_ids=[(1, "5-0")], result=append.result)
    assert receipt_of(result) == Receipt(
        order_id="o1", lines=event.lines, total=5180, currency="BRL", position=result.position
    )


def test_a_record_stored_as_a_receipt_before_the_event_was_stored_replays_alike() -> None:
    line = {"product_id": "mug", "name": "Caneca", "quantity": 2, "unit_price": 2590}
    stored = {"order_id": "o1", "lines": [{**line, "line_total": 5180}], "total": 5180}
    old = msgspec.json.encode({"request": "f", "receipt": {**stored, "currency": "BRL"}})
    replay = AppendResult(entry_ids=[(1, "5-0")], duplicate=True, result=old.decode())
    receipt = receipt_of(replay)
    assert (receipt.order_id, receipt.total, receipt.position) == ("o1", 5180, replay.position)
    assert receipt.lines == [OrderLine(**line, line_total=5180)]
