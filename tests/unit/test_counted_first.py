"""Which category a catalog event counts first on a cluster, and which counts follow it."""

from __future__ import annotations

from events.effects import counted_first, counter_effects
from events.types import (
    CategoryCreated,
    CategoryDeleted,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
)


def created(category: str = "") -> ProductCreated:
    return ProductCreated(product_id="p1", sku="S", name="n", price=1, category=category)


def test_a_new_product_counts_first_in_its_category_and_nothing_follows() -> None:
    assert counted_first(created("books")) == "category:books"
    assert counter_effects(created("books")) == {}


def test_a_product_without_a_category_counts_nowhere() -> None:
    assert counted_first(created()) is None
    assert counter_effects(created()) == {}


def test_a_moved_product_counts_first_in_the_new_category_and_leaves_the_old_after() -> None:
    moved = ProductUpdated(product_id="p1", category="novels", previous_category="books")
    assert counted_first(moved) == "category:novels"
    assert counter_effects(moved) == {"category:books": {"products": -1}}


def test_an_update_that_keeps_the_category_counts_nothing() -> None:
    kept = ProductUpdated(product_id="p1", name="other")
    assert counted_first(kept) is None
    assert counter_effects(kept) == {}


def test_a_child_category_counts_first_under_its_parent_and_leaves_it_after() -> None:
    assert counted_first(CategoryCreated(slug="novels", name="N", parent="books")) == (
        "category:books"
    )
    assert counter_effects(CategoryDeleted(slug="novels", parent="books")) == {
        "category:books": {"children": -1}
    }
    assert counter_effects(ProductDeleted(product_id="p1", category="books")) == {
        "category:books": {"products": -1}
    }
