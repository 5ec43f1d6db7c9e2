"""The billing saga's events as decision state, with plain data: each step changes the one
aggregate of its slot, and a saga that ends billed or abandoned leaves stock exact."""

from __future__ import annotations

from events.states import OrderState, ProductState, affected, fold
from events.store import Guard, StateChange, derive_writes
from events.types import (
    OrderBilled,
    OrderBillingAbandoned,
    OrderBillingStarted,
    OrderLine,
    ProductCreated,
    StockReleased,
    StockReserved,
    StockTaken,
)

AT = "2026-12-01T12:00:00.000Z"
CREATED = ProductCreated(product_id="p1", sku="MUG", name="Caneca", price=100, stock=5)
LINES = [OrderLine(product_id="p1", name="Caneca", quantity=2, unit_price=100, line_total=200)]
STARTED = OrderBillingStarted(
    order_id="o1", account_id="a1", lines=LINES, total=200, reserved_until=1000
)
RESERVED = StockReserved(product_id="p1", order_id="o1", quantity=2, reserved_until=1000)
BILLED = OrderBilled(order_id="o1", account_id="a1", lines=LINES, total=200, reserved=True)


def test_a_saga_billing_touches_only_the_order_and_its_steps_only_their_product() -> None:
    assert affected(BILLED) == ["order:o1"]
    assert affected(STARTED) == ["order:o1"]
    assert affected(RESERVED) == ["product:p1"]
    single = OrderBilled(order_id="o1", account_id="a1", lines=LINES, total=200)
    assert affected(single) == ["order:o1", "product:p1"]


def test_a_billed_saga_takes_the_reserved_stock_for_good() -> None:
    taken = StockTaken(product_id="p1", order_id="o1", quantity=2)
    product = fold("product:p1", [CREATED, RESERVED, BILLED, taken])
    assert (product.stock, product.reserved, product.v) == (3, 0, 3)
    order = fold("order:o1", [STARTED, RESERVED, BILLED])
    assert order.status == "billed" and order.v == 2


def test_an_abandoned_saga_returns_the_reserved_stock() -> None:
    abandoned = OrderBillingAbandoned(order_id="o1", reason="expired")
    released = StockReleased(product_id="p1", order_id="o1", quantity=2)
    product = fold("product:p1", [CREATED, RESERVED, abandoned, released])
    assert (product.stock, product.reserved) == (5, 0)
    order = fold("order:o1", [STARTED, abandoned])
    assert (order.status, order.abandoned, order.reserved_until) == ("abandoned", "expired", 1000)


def test_a_reservation_is_a_guarded_counter_change_of_its_product() -> None:
    product = fold("product:p1", [CREATED])
    changes, guards = derive_writes({"product:p1": product}, [RESERVED], {}, AT)
    assert changes == {"product:p1": StateChange(incr={"stock": -2, "reserved": 2})}
    assert guards == [Guard("product:p1", "stock", 2)]


def test_the_saga_confirm_sets_only_the_order() -> None:
    order = fold("order:o1", [STARTED])
    assert isinstance(order, OrderState)
    changes, guards = derive_writes({"order:o1": order}, [BILLED], {"order:o1": order.v}, AT)
    assert list(changes) == ["order:o1"] and changes["order:o1"].set["status"] == "billed"
    assert guards == []
    assert isinstance(fold("product:p1", [CREATED, BILLED]), ProductState)
    assert fold("product:p1", [CREATED, BILLED]).stock == 5
