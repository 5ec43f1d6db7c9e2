"""Seller ownership and category decisions with plain data (issue 15): given states, when a
command, then an append or a named refusal; and the category SCD-2 fold of the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime

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
from app.commands.categories import (
    CreateCategory,
    DeleteCategory,
    RenameCategory,
    decide_create_category,
    decide_delete_category,
    decide_rename_category,
)
from app.commands.errors import (
    CategoryAlreadyExists,
    CategoryNotFound,
    NotASeller,
    ProductNotFound,
    UnknownCategory,
)
from events.codec import RecordedEvent
from events.states import AccountState, CategoryState, ProductState, fold
from events.types import (
    CategoryCreated,
    CategoryDeleted,
    CategoryRenamed,
    ProductCreated,
)
from projections.warehouse_catalog import fold_categories

SELLER = AccountState(v=1, email="s@example.com", name="Loja", role="seller")
MINE = ProductState(v=1, sku="MUG", name="Caneca", price=2590, stock=4, seller_id="s1")
SHOPS = ProductState(v=1, sku="TEA", name="Chá", price=900, stock=4)
BOOKS = CategoryState(v=1, name="Books")


def test_a_sellers_product_carries_its_seller_id_into_event_and_state() -> None:
    cmd = CreateProduct(product_id="p1", sku="MUG", name="Caneca", price=1, seller_id="s1")
    append = decide_create_product(cmd, ProductState(), seller=SELLER)
    [event] = append.events
    assert isinstance(event, ProductCreated) and event.seller_id == "s1"
    assert append.state["product:p1"].set["seller_id"] == "s1"


def test_a_product_cannot_be_assigned_to_an_account_that_is_no_seller() -> None:
    cmd = CreateProduct(product_id="p1", sku="MUG", name="Caneca", price=1, seller_id="c1")
    customer = AccountState(v=1, role="customer")
    with pytest.raises(NotASeller) as refused:
        decide_create_product(cmd, ProductState(), seller=customer)
    assert refused.value.field == "seller_id"


@pytest.mark.parametrize(
    "decide, cmd",
    [
        (decide_update_product, UpdateProduct(product_id="p1", price=1, owner="s2")),
        (decide_delete_product, DeleteProduct(product_id="p1", owner="s2")),
        (decide_adjust_stock, AdjustStock(product_id="p1", delta=1, owner="s2")),
    ],
)
def test_a_seller_cannot_touch_another_sellers_product(decide: object, cmd: object) -> None:
    with pytest.raises(ProductNotFound):
        decide(cmd, MINE)  # type: ignore[operator]


def test_a_seller_cannot_touch_the_shops_own_product() -> None:
    with pytest.raises(ProductNotFound):
        decide_update_product(UpdateProduct(product_id="p1", price=1, owner="s1"), SHOPS)


def test_the_owner_and_the_admin_may_change_a_sellers_product() -> None:
    assert decide_update_product(UpdateProduct(product_id="p1", price=5, owner="s1"), MINE).events
    assert decide_update_product(UpdateProduct(product_id="p1", price=5), MINE).events


def test_an_unknown_or_deleted_category_is_refused_naming_the_field() -> None:
    cmd = CreateProduct(product_id="p1", sku="B", name="Livro", price=1, category="books")
    for state in (CategoryState(), CategoryState(v=2, name="Books", deleted=True)):
        with pytest.raises(UnknownCategory) as refused:
            decide_create_product(cmd, ProductState(), category=state)
        assert refused.value.field == "category"
    update = UpdateProduct(product_id="p1", category="books")
    with pytest.raises(UnknownCategory):
        decide_update_product(update, SHOPS, CategoryState())


def test_a_known_category_is_checked_again_inside_the_append() -> None:
    cmd = CreateProduct(product_id="p1", sku="B", name="Livro", price=1, category="books")
    append = decide_create_product(cmd, ProductState(), category=BOOKS)
    assert append.exists == ["category:books"]
    assert append.absent == [("category:books", "deleted")]


def test_no_category_needs_no_category() -> None:
    append = decide_create_product(
        CreateProduct(product_id="p1", sku="B", name="Livro", price=1), ProductState()
    )
    assert (append.exists, append.absent) == ([], [])


def test_a_category_is_created_under_a_live_parent_only() -> None:
    cmd = CreateCategory(slug="novels", name="Novels", parent="books")
    append = decide_create_category(cmd, CategoryState(), BOOKS)
    assert append.events == [CategoryCreated(slug="novels", name="Novels", parent="books")]
    assert append.exists == ["category:books"]
    with pytest.raises(UnknownCategory) as refused:
        decide_create_category(cmd, CategoryState(), CategoryState())
    assert refused.value.field == "parent"
    with pytest.raises(UnknownCategory):
        decide_create_category(CreateCategory(slug="x", name="X", parent="x"), CategoryState())


def test_a_live_slug_cannot_be_created_twice_but_a_deleted_one_can() -> None:
    with pytest.raises(CategoryAlreadyExists):
        decide_create_category(CreateCategory(slug="books", name="B"), BOOKS)
    gone = CategoryState(v=2, name="Books", deleted=True)
    append = decide_create_category(CreateCategory(slug="books", name="Livros"), gone)
    assert append.expect == {"category:books": 2}


def test_rename_and_delete_need_a_live_category() -> None:
    renamed = decide_rename_category(RenameCategory(slug="books", name="Livros"), BOOKS)
    assert renamed.events == [CategoryRenamed(slug="books", name="Livros")]
    assert renamed.expect == {"category:books": 1}
    for decide, cmd in (
        (decide_rename_category, RenameCategory(slug="books", name="x")),
        (decide_delete_category, DeleteCategory(slug="books")),
    ):
        with pytest.raises(CategoryNotFound):
            decide(cmd, CategoryState())  # type: ignore[operator]


def test_the_category_state_is_the_fold_of_its_events() -> None:
    events = [
        CategoryCreated(slug="books", name="Books", parent="media"),
        CategoryRenamed(slug="books", name="Livros"),
        CategoryDeleted(slug="books"),
    ]
    state = fold("category:books", events)
    assert state == CategoryState(v=3, name="Livros", parent="media", deleted=True)
    again = fold("category:books", [CategoryCreated(slug="books", name="Books")], state)
    assert (again.v, again.live, again.parent) == (4, True, "")


def _rec(event: object, seq: int, minute: int) -> RecordedEvent:
    at = datetime(2026, 1, 1, 12, minute, tzinfo=UTC)
    return RecordedEvent(
        entry_id=f"{minute}-0",
        partition=0,
        id=f"e{seq}",
        type=type(event).__name__,
        schema=1,
        aggregate="category:books",
        seq=seq,
        at=at,
        actor="test",
        correlation="c",
        causation="c",
        source="api",
        event=event,  # type: ignore[arg-type]
    )


def test_a_rename_closes_the_current_category_version_and_opens_the_next() -> None:
    versions = fold_categories(
        {},
        [
            _rec(CategoryCreated(slug="books", name="Books"), 1, 0),
            _rec(CategoryRenamed(slug="books", name="Livros"), 2, 5),
        ],
    )
    first, second = versions[("books", 1)], versions[("books", 2)]
    assert (first.name, first.is_current, first.valid_to) == ("Books", False, second.valid_from)
    assert (second.name, second.is_current, second.valid_to) == ("Livros", True, None)
