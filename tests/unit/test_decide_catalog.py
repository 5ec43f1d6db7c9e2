"""Catalog decisions with plain data: given a product's state, when a command, then an append."""

from __future__ import annotations

import msgspec
import pytest

from app.commands.catalog import (
    AdjustStock,
    CreateProduct,
    DeleteProduct,
    UpdateProduct,
    decide_adjust_stock,
    decide_create_product,
    decide_delete_product,
    decide_update_product,
)
from app.commands.errors import (
    EmptyUpdate,
    InsufficientStock,
    InvalidCommand,
    ProductAlreadyExists,
    ProductNotFound,
)
from app.commands.runner import rejection
from events.errors import GuardFailed
from events.states import ProductState
from events.store import Guard, Reservation
from events.types import ProductCreated, ProductDeleted, ProductUpdated, StockAdjusted

LIVE = ProductState(v=3, sku="MUG", name="Caneca", price=2590, currency="BRL", stock=4)


def test_create_expects_a_new_product_and_reserves_sku_and_legacy_id() -> None:
    cmd = CreateProduct(
        product_id="p1", sku="MUG", name="Caneca", price=2590, stock=4, legacy_id=42
    )
    append = decide_create_product(cmd, ProductState())
    [event] = append.events
    assert isinstance(event, ProductCreated) and event.legacy_id == 42
    assert append.expect == {"product:p1": 0}
    assert append.reserve == [
        Reservation("sku", "MUG", "product:p1"),
        Reservation("legacy_product", "42", "product:p1"),
    ]
    assert append.state["product:p1"].set["stock"] == 4


def test_create_of_an_existing_product_is_refused() -> None:
    with pytest.raises(ProductAlreadyExists):
        decide_create_product(CreateProduct(product_id="p1", sku="S", name="n", price=1), LIVE)


def test_update_records_only_given_fields_against_the_read_version() -> None:
    append = decide_update_product(UpdateProduct(product_id="p1", price=2990), LIVE)
    assert append.events == [ProductUpdated(product_id="p1", price=2990)]
    assert append.expect == {"product:p1": 3}
    assert append.state["product:p1"].set == {"price": 2990}


def test_an_update_with_nothing_to_change_is_refused() -> None:
    with pytest.raises(EmptyUpdate):
        decide_update_product(UpdateProduct(product_id="p1"), LIVE)


@pytest.mark.parametrize("state", [ProductState(), ProductState(v=4, sku="MUG", deleted=True)])
def test_commands_on_a_missing_or_deleted_product_are_refused(state: ProductState) -> None:
    with pytest.raises(ProductNotFound):
        decide_update_product(UpdateProduct(product_id="p1", name="x"), state)
    with pytest.raises(ProductNotFound):
        decide_delete_product(DeleteProduct(product_id="p1"), state)
    with pytest.raises(ProductNotFound):
        decide_adjust_stock(AdjustStock(product_id="p1", delta=1), state)


def test_delete_marks_the_product_and_frees_its_sku() -> None:
    append = decide_delete_product(DeleteProduct(product_id="p1"), LIVE)
    assert append.events == [ProductDeleted(product_id="p1")]
    assert append.release == [("sku", "MUG")]
    assert append.state["product:p1"].set == {"deleted": 1}


def test_removing_stock_is_guarded_and_needs_no_version() -> None:
    append = decide_adjust_stock(AdjustStock(product_id="p1", delta=-3, reason="quebra"), LIVE)
    assert append.events == [StockAdjusted(product_id="p1", delta=-3, reason="quebra")]
    assert append.expect == {}
    assert append.guards == [Guard("product:p1", "stock", 3)]
    assert append.state["product:p1"].incr == {"stock": -3}


def test_removing_more_than_the_stock_is_refused() -> None:
    with pytest.raises(InsufficientStock):
        decide_adjust_stock(AdjustStock(product_id="p1", delta=-5), LIVE)


def test_a_zero_adjustment_is_refused() -> None:
    with pytest.raises(InvalidCommand):
        decide_adjust_stock(AdjustStock(product_id="p1", delta=0), LIVE)


def test_a_stock_delta_refused_by_the_guard_reads_as_the_deciders_refusal() -> None:
    """A sale between the decision and the append: the guard's 409 names the field, the
    product and what was asked, as the decider's own refusal does."""
    product_id = "0190a1b2-0000-7000-8000-000000000001"
    command = AdjustStock(product_id=product_id, delta=-5)
    guarded = rejection(command, GuardFailed(f"product:{product_id}", "stock", 3, 5))
    with pytest.raises(InsufficientStock) as decided:
        decide_adjust_stock(command, msgspec.structs.replace(LIVE, stock=3))
    assert isinstance(guarded, InsufficientStock)
    assert (guarded.field, guarded.extra) == (decided.value.field, decided.value.extra)
    assert guarded.detail == decided.value.detail
