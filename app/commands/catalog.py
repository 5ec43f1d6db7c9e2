"""Catalog commands: create, update, delete a product and adjust its stock.

Used by the admin HTTP routes and by the ingress gateway (``workers/ingest.py``), both
through :func:`app.commands.execute`, so external producers go through exactly the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, TypeVar

import msgspec

from app.commands.base import Command, request_fingerprint, result_json, validated
from app.commands.errors import (
    EmptyUpdate,
    InsufficientStock,
    InvalidCommand,
    NotASeller,
    ProductAlreadyExists,
    ProductNotFound,
    UnknownCategory,
)
from app.commands.runner import Decider, state_of
from events.ids import uuid7
from events.states import AccountState, AggregateState, CategoryState, ProductState
from events.store import Append, Reservation
from events.types import ProductCreated, ProductDeleted, ProductUpdated, StockAdjusted

ProductId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Sku = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=5000)]
Category = Annotated[str, msgspec.Meta(max_length=100)]
Price = Annotated[int, msgspec.Meta(ge=0, le=10**12, description="Integer minor units.")]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$", description="ISO 4217 code.")]
Stock = Annotated[int, msgspec.Meta(ge=0, le=10**9)]
Delta = Annotated[int, msgspec.Meta(ge=-(10**9), le=10**9)]
Reason = Annotated[str, msgspec.Meta(max_length=500)]
LegacyId = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
AccountId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class CreateProduct(Command, frozen=True, kw_only=True):
    """Add a product. Without ``product_id`` one is generated (and returned in the result)."""

    product_id: ProductId | None = None
    sku: Sku
    name: Name
    description: Description = ""
    category: Category = ""
    price: Price
    currency: Currency = "BRL"
    stock: Stock = 0
    legacy_id: LegacyId | None = None
    """The product's id in the old Portuguese API; reserved so legacy orders can name it."""
    seller_id: AccountId | None = None
    """The seller account that owns the product (it must have the ``seller`` role)."""


class UpdateProduct(Command, frozen=True, kw_only=True):
    """Change catalog fields; ``None`` leaves a field as it is."""

    product_id: ProductId
    name: Name | None = None
    description: Description | None = None
    category: Category | None = None
    price: Price | None = None
    currency: Currency | None = None
    owner: AccountId | None = None
    """The seller acting; the product must be theirs (``None``: the shop, any product)."""


class DeleteProduct(Command, frozen=True, kw_only=True):
    product_id: ProductId
    owner: AccountId | None = None
    """As in :class:`UpdateProduct`."""


class AdjustStock(Command, frozen=True, kw_only=True):
    """Add (receiving) or remove (breakage, counting) stock by hand; never below zero."""

    product_id: ProductId
    delta: Delta
    reason: Reason = ""
    owner: AccountId | None = None
    """As in :class:`UpdateProduct`."""


CatalogCommand = CreateProduct | UpdateProduct | DeleteProduct | AdjustStock
C = TypeVar("C", CreateProduct, UpdateProduct, DeleteProduct, AdjustStock)


def product_aggregate(product_id: str) -> str:
    return f"product:{product_id}"


def category_aggregate(slug: str) -> str:
    return f"category:{slug}"


def seller_aggregate(seller_id: str) -> str:
    return f"account:{seller_id}"


def _check_category(
    slug: str | None, state: CategoryState | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """A named category must be live in the tree; returns the append's ``exists`` and
    ``absent`` conditions that keep it so until the append (``""``: no category)."""
    if not slug:
        return [], []
    if state is None or not state.live:
        raise UnknownCategory(f"category {slug!r} does not exist", field="category")
    aggregate = category_aggregate(slug)
    return [aggregate], [(aggregate, "deleted")]


def _check_owner(owner: str | None, state: ProductState, product_id: str) -> None:
    """A seller sees another seller's product as absent (404), not as forbidden: the
    answer does not tell which ids exist."""
    if owner is not None and state.seller_id != owner:
        raise ProductNotFound(f"product {product_id} does not exist", field="product_id")


def product_request(cmd: CreateProduct) -> str:
    """The fingerprint of a creation (:func:`~app.commands.base.request_fingerprint`),
    without the product id: a retry draws a new one."""
    return request_fingerprint(msgspec.structs.replace(cmd, product_id=None))


def stock_request(cmd: AdjustStock) -> str:
    return request_fingerprint(cmd)


# -- pure decisions ------------------------------------------------------------------------


def decide_create_product(
    cmd: CreateProduct,
    state: ProductState,
    category: CategoryState | None = None,
    seller: AccountState | None = None,
) -> Append:
    """A new product: its version must still be 0, its SKU (and legacy id) free, its
    category (if any) in the tree and its seller (if any) a seller account."""
    if cmd.product_id is None:
        raise InvalidCommand("product_id must be assigned before deciding", field="product_id")
    if state.exists:
        raise ProductAlreadyExists(f"product {cmd.product_id} already exists", field="product_id")
    if cmd.seller_id is not None and (seller is None or seller.role != "seller"):
        raise NotASeller(f"account {cmd.seller_id} is not a seller", field="seller_id")
    exists, absent = _check_category(cmd.category, category)
    aggregate = product_aggregate(cmd.product_id)
    reserve = [Reservation("sku", cmd.sku, aggregate)]
    if cmd.legacy_id is not None:
        reserve.append(Reservation("legacy_product", str(cmd.legacy_id), aggregate))
    event = ProductCreated(
        product_id=cmd.product_id,
        sku=cmd.sku,
        name=cmd.name,
        description=cmd.description,
        category=cmd.category,
        price=cmd.price,
        currency=cmd.currency,
        stock=cmd.stock,
        legacy_id=cmd.legacy_id,
        seller_id=cmd.seller_id,
    )
    return Append(
        events=[event],
        expect={aggregate: 0},
        exists=exists,
        absent=absent,
        reserve=reserve,
        seen={aggregate: state},
        result=result_json({"product_id": cmd.product_id, "request": product_request(cmd)}),
    )


def decide_update_product(
    cmd: UpdateProduct, state: ProductState, category: CategoryState | None = None
) -> Append:
    """Only fields that are given make the event; a no-op update is refused."""
    if not state.live:
        raise ProductNotFound(f"product {cmd.product_id} does not exist", field="product_id")
    _check_owner(cmd.owner, state, cmd.product_id)
    changes = {
        name: value
        for name in ("name", "description", "category", "price", "currency")
        if (value := getattr(cmd, name)) is not None
    }
    if not changes:
        raise EmptyUpdate("give at least one field to change")
    exists, absent = _check_category(cmd.category, category)
    if cmd.category is not None and cmd.category != state.category:
        changes["previous_category"] = state.category  # both categories' counts move
    else:
        # Its own category: the product counts in it, so it cannot be deleted while the
        # append (which expects the product's version) lands; nothing to re-check there.
        exists, absent = [], []
    aggregate = product_aggregate(cmd.product_id)
    return Append(
        events=[ProductUpdated(product_id=cmd.product_id, **changes)],
        expect={aggregate: state.v},
        exists=exists,
        absent=absent,
        seen={aggregate: state},
        result=result_json({"product_id": cmd.product_id}),
    )


def decide_delete_product(cmd: DeleteProduct, state: ProductState) -> Append:
    """Marks the product deleted (orders then refuse it) and frees its SKU for reuse; its
    category counts one product less."""
    if not state.live:
        raise ProductNotFound(f"product {cmd.product_id} does not exist", field="product_id")
    _check_owner(cmd.owner, state, cmd.product_id)
    aggregate = product_aggregate(cmd.product_id)
    return Append(
        events=[ProductDeleted(product_id=cmd.product_id, category=state.category or None)],
        expect={aggregate: state.v},
        release=[("sku", state.sku)] if state.sku else [],
        seen={aggregate: state},
        result=result_json({"product_id": cmd.product_id}),
    )


def decide_adjust_stock(cmd: AdjustStock, state: ProductState) -> Append:
    """No version expected: stock is a counter, so adjustments and orders never conflict;
    the floor of ``ProductState.COUNTERS`` becomes a guard inside the append."""
    if not state.live:
        raise ProductNotFound(f"product {cmd.product_id} does not exist", field="product_id")
    _check_owner(cmd.owner, state, cmd.product_id)
    if cmd.delta == 0:
        raise InvalidCommand("delta must not be zero", field="delta")
    if cmd.delta < 0 and state.stock < -cmd.delta:
        raise InsufficientStock.for_delta(cmd.product_id, state.stock, -cmd.delta)
    aggregate = product_aggregate(cmd.product_id)
    return Append(
        events=[StockAdjusted(product_id=cmd.product_id, delta=cmd.delta, reason=cmd.reason)],
        exists=[aggregate],
        absent=[(aggregate, "deleted")],
        seen={aggregate: state},
        result=result_json({"product_id": cmd.product_id, "request": stock_request(cmd)}),
    )


# -- how the runner executes them -----------------------------------------------------


def _create_with_id(command: CreateProduct) -> CreateProduct:
    command = validated(command)
    if command.product_id is None:
        command = msgspec.structs.replace(command, product_id=uuid7())
    return command


def _on_product(
    decide: Callable[[C, ProductState], Append],
) -> Callable[[C, Mapping[str, AggregateState]], Append]:
    """A decision over the one product the command names."""
    return lambda c, s: decide(c, state_of(s, product_aggregate(c.product_id or ""), ProductState))


def _product(command: CatalogCommand) -> list[str]:
    return [product_aggregate(command.product_id or "")]


def _product_and_refs(command: CreateProduct | UpdateProduct) -> list[str]:
    """The product, the category it names and (on creation) its seller."""
    reads = _product(command)
    if command.category:
        reads.append(category_aggregate(command.category))
    if isinstance(command, CreateProduct) and command.seller_id is not None:
        reads.append(seller_aggregate(command.seller_id))
    return reads


def _decide_create(command: CreateProduct, states: Mapping[str, AggregateState]) -> Append:
    product = state_of(states, product_aggregate(command.product_id or ""), ProductState)
    category = (
        state_of(states, category_aggregate(command.category), CategoryState)
        if command.category
        else None
    )
    seller = (
        state_of(states, seller_aggregate(command.seller_id), AccountState)
        if command.seller_id is not None
        else None
    )
    return decide_create_product(command, product, category, seller)


def _decide_update(command: UpdateProduct, states: Mapping[str, AggregateState]) -> Append:
    product = state_of(states, product_aggregate(command.product_id), ProductState)
    category = (
        state_of(states, category_aggregate(command.category), CategoryState)
        if command.category
        else None
    )
    return decide_update_product(command, product, category)


CREATE_PRODUCT: Decider[CreateProduct] = Decider(
    reads=_product_and_refs, decide=_decide_create, prepare=_create_with_id
)
UPDATE_PRODUCT: Decider[UpdateProduct] = Decider(reads=_product_and_refs, decide=_decide_update)
DELETE_PRODUCT: Decider[DeleteProduct] = Decider(
    reads=_product, decide=_on_product(decide_delete_product)
)
ADJUST_STOCK: Decider[AdjustStock] = Decider(
    reads=_product, decide=_on_product(decide_adjust_stock)
)
