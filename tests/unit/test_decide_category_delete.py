"""Deleting a category only while it is empty, with plain data: given events, when a
command, then an append or a named refusal; the counts are the fold of other aggregates'
events."""

from __future__ import annotations

import pytest

from app.commands.catalog import (
    DeleteProduct,
    UpdateProduct,
    decide_delete_product,
    decide_update_product,
)
from app.commands.categories import DeleteCategory, decide_delete_category
from app.commands.errors import CategoryInUse
from events.states import CategoryState, ProductState, affected, fold
from events.types import (
    CategoryCreated,
    CategoryDeleted,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
)

BOOKS = CategoryCreated(slug="books", name="Books")
NOVELS = CategoryCreated(slug="novels", name="Novels", parent="books")
MUG = ProductCreated(product_id="p1", sku="MUG", name="Caneca", price=1, category="books")


def books(*events: object) -> CategoryState:
    state: CategoryState = fold("category:books", [BOOKS, *events])
    return state


def test_a_category_counts_its_products_and_children() -> None:
    state = books(MUG, NOVELS)

    assert (state.products, state.children) == (1, 1)
    assert state.v == 1  # other aggregates' events move counters, not its version


def test_a_category_with_products_or_children_is_not_deleted() -> None:
    with pytest.raises(CategoryInUse) as refused:
        decide_delete_category(DeleteCategory(slug="books"), books(MUG, NOVELS))

    assert refused.value.detail == "category 'books' has 1 product and 1 child category"
    assert refused.value.field == "slug"


def test_an_empty_category_is_deleted_and_the_append_checks_it_stays_empty() -> None:
    append = decide_delete_category(
        DeleteCategory(slug="novels"), fold("category:novels", [NOVELS])
    )

    assert append.events == [CategoryDeleted(slug="novels", parent="books")]
    assert append.absent == [("category:novels", "products"), ("category:novels", "children")]
    assert affected(append.events[0]) == ["category:novels", "category:books"]


def test_deleting_or_moving_a_product_and_deleting_a_child_empty_a_category() -> None:
    product = fold("product:p1", [MUG])
    assert isinstance(product, ProductState)
    novels_state = fold("category:novels", [NOVELS])
    [moved] = decide_update_product(
        UpdateProduct(product_id="p1", category="novels"), product, novels_state
    ).events
    [gone] = decide_delete_product(
        DeleteProduct(product_id="p1"), fold("product:p1", [MUG, moved])
    ).events

    assert moved == ProductUpdated(product_id="p1", category="novels", previous_category="books")
    assert gone == ProductDeleted(product_id="p1", category="novels")
    assert books(MUG, NOVELS, moved).products == 0
    novels = fold("category:novels", [NOVELS, MUG, moved])
    assert novels.products == 1
    assert fold("category:novels", [NOVELS, MUG, moved, gone]).products == 0
    assert books(MUG, NOVELS, moved, CategoryDeleted(slug="novels", parent="books")).children == 0


def test_an_update_that_keeps_the_category_moves_no_count() -> None:
    product = fold("product:p1", [MUG])
    [event] = decide_update_product(UpdateProduct(product_id="p1", name="Xícara"), product).events

    assert isinstance(event, ProductUpdated) and event.previous_category is None
    assert affected(event) == ["product:p1"]
