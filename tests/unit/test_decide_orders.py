"""Cancelling an order, as given events → when command → then events / error."""

from __future__ import annotations

import pytest

from app.commands.errors import OrderNotCancellable, OrderNotFound
from app.commands.orders import CancelOrder, decide_cancel_order
from events.states import fold
from events.store import StateChange
from events.types import OrderBilled, OrderCancelled, OrderLine

LINES = [OrderLine(product_id="mug", name="Caneca", quantity=2, unit_price=10, line_total=20)]
BILLED = OrderBilled(order_id="o1", account_id="a1", lines=LINES, total=20)


def given(*events: OrderBilled | OrderCancelled):  # type: ignore[no-untyped-def]
    return fold("order:o1", events)


def test_the_owner_cancels_a_billed_order_and_its_lines_go_back_to_stock() -> None:
    append = decide_cancel_order(CancelOrder(order_id="o1", account_id="a1"), given(BILLED))
    assert append.events == [OrderCancelled(order_id="o1", account_id="a1", lines=LINES)]
    assert append.expect == {"order:o1": 1}
    assert append.state["product:mug"] == StateChange(incr={"stock": 2})
    assert append.state["order:o1"].set == {"status": "cancelled"}
    assert append.guards == []


def test_a_cancelled_order_cannot_be_cancelled_again() -> None:
    cancelled = OrderCancelled(order_id="o1", account_id="a1", lines=LINES)
    with pytest.raises(OrderNotCancellable):
        decide_cancel_order(CancelOrder(order_id="o1", account_id="a1"), given(BILLED, cancelled))


@pytest.mark.parametrize("account", ["a1", "someone-else"])
def test_an_unknown_order_or_someone_elses_is_not_found(account: str) -> None:
    state = given(BILLED) if account != "a1" else given()
    with pytest.raises(OrderNotFound):
        decide_cancel_order(CancelOrder(order_id="o1", account_id=account), state)
