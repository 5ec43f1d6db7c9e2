"""Deleting a category only while it is empty, on the real Redis: the counts a delete is
decided on are re-checked inside its atomic append, so a product created between the
decision and the append is never left in a deleted category."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from app.commands import execute
from app.commands.catalog import CreateProduct, DeleteProduct, UpdateProduct
from app.commands.categories import (
    CreateCategory,
    DeleteCategory,
    decide_delete_category,
)
from app.commands.errors import CategoryInUse
from app.commands.runner import rejection
from events.errors import AppendRejected
from events.keys import digest
from events.states import CategoryState
from events.store import EventStore, Metadata
from tests.support.cluster import single_and_cluster
from workers.state import rebuild_state, verify_state

pytestmark = single_and_cluster

META = Metadata(actor="test")


def slug() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


async def product_in(store: EventStore, category: str) -> str:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    created = await execute(
        store, CreateProduct(sku=sku, name="Livro", price=100, category=category), META
    )
    return str(msgspec.json.decode(created.result)["product_id"])


async def test_a_product_created_after_the_decision_makes_the_delete_fail(
    store: EventStore,
) -> None:
    books = slug()
    await execute(store, CreateCategory(slug=books, name="Books"), META)
    aggregate = f"category:{books}"
    seen = (await store.load([aggregate]))[aggregate]
    assert isinstance(seen, CategoryState)
    stale = decide_delete_category(DeleteCategory(slug=books), seen)  # decided while empty

    await product_in(store, books)  # lands between the decision and its append

    with pytest.raises(AppendRejected) as refused:
        await store.append(stale)
    error = rejection(DeleteCategory(slug=books), refused.value)
    assert isinstance(error, CategoryInUse) and error.field == "slug"
    state = (await store.load([aggregate]))[aggregate]
    assert isinstance(state, CategoryState) and state.live and state.products == 1


async def test_a_category_empties_as_its_products_move_or_go_and_its_children_go(
    store: EventStore,
) -> None:
    books, novels = slug(), slug()
    await execute(store, CreateCategory(slug=books, name="Books"), META)
    await execute(store, CreateCategory(slug=novels, name="Novels", parent=books), META)
    one, two = await product_in(store, books), await product_in(store, books)

    with pytest.raises(CategoryInUse, match="has 2 products and 1 child category"):
        await execute(store, DeleteCategory(slug=books), META)
    await execute(store, UpdateProduct(product_id=one, category=novels), META)
    await execute(store, DeleteProduct(product_id=two), META)
    with pytest.raises(CategoryInUse, match="has 0 products and 1 child category"):
        await execute(store, DeleteCategory(slug=books), META)
    await execute(store, DeleteProduct(product_id=one), META)
    await execute(store, DeleteCategory(slug=novels), META)
    await execute(store, DeleteCategory(slug=books), META)

    assert (await verify_state(store)).ok
    assert (await rebuild_state(store)).written == []


async def test_a_count_taken_by_a_creation_that_never_appended_is_found_and_repaired(
    store: EventStore,
) -> None:
    """The crash point of the cluster's count-first step: the category counts a product
    the log does not have. It refuses its delete (the safe side), ``verify state`` names
    it, ``rebuild state`` folds it back."""
    from app.commands.slots import _count  # the step alone, as a crash after it leaves it

    books = slug()
    await execute(store, CreateCategory(slug=books, name="Books"), META)
    await _count(store, "no-such-event", "first", f"category:{books}", {"products": 1}, live=True)

    with pytest.raises(CategoryInUse, match="has 1 product"):
        await execute(store, DeleteCategory(slug=books), META)
    assert [d.aggregate for d in (await verify_state(store)).differences] == [f"category:{books}"]
    assert (await rebuild_state(store)).written == [f"category:{books}"]
    await execute(store, DeleteCategory(slug=books), META)


async def test_a_category_deleted_after_a_product_was_decided_in_it_refuses_the_product(
    store: EventStore,
) -> None:
    """The other order of the race: the delete lands between a creation's decision and its
    append. On the cluster the count step finds the category deleted, in its slot."""
    from app.commands.catalog import decide_create_product
    from app.commands.colocation import colocate
    from app.commands.slots import append_across_slots
    from events.states import ProductState

    sku = f"S-{uuid.uuid4().hex[:6]}"
    books = slug()
    while store.keys.partition_of(f"category:{books}") == store.keys.partition_of(
        f"sku:{digest(sku)}"
    ):
        books = slug()  # the category in another slot than the product's
    await execute(store, CreateCategory(slug=books, name="Books"), META)
    aggregate = f"category:{books}"
    seen = (await store.load([aggregate]))[aggregate]
    assert isinstance(seen, CategoryState)
    command = CreateProduct(product_id=None, sku=sku, name="L", price=1)
    command = msgspec.structs.replace(command, category=books)
    command = colocate(store, command) if store.clustered else command
    if command.product_id is None:
        command = msgspec.structs.replace(command, product_id=str(uuid.uuid4()))
    stale = decide_create_product(command, ProductState(), seen)  # decided while live

    await execute(store, DeleteCategory(slug=books), META)  # lands before its append

    with pytest.raises(AppendRejected) as refused:
        await append_across_slots(store, stale) if store.clustered else await store.append(stale)
    assert str(rejection(command, refused.value).slug) == "unknown-category"
    state = (await store.load([aggregate]))[aggregate]
    assert isinstance(state, CategoryState) and state.deleted and state.products == 0
    assert await store.owner_of("sku", command.sku) is None
    assert (await verify_state(store)).ok
