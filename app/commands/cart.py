"""The customer's cart (aggregate ``cart:<account id>``): set or remove a product's quantity.

A cart keeps product ids and quantities only; it is priced at the current catalog price
when read and when checked out. Each step touches the cart's partition only (a product is
read to refuse an unknown one, but its version is not expected: a price change does not
invalidate a cart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from app.commands.base import Command, result_json
from app.commands.billing import Quantity
from app.commands.catalog import ProductId, product_aggregate
from app.commands.errors import UnknownProduct
from app.commands.runner import Decider, state_of
from events.states import AggregateState, CartState, ProductState
from events.store import Append
from events.types import CartItemRemoved, CartItemSet

MAX_CART_ITEMS = 100

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


def cart_aggregate(account_id: str) -> str:
    return f"cart:{account_id}"


class SetCartItem(Command, frozen=True, kw_only=True):
    account_id: Id
    product_id: ProductId
    quantity: Quantity


class RemoveCartItem(Command, frozen=True, kw_only=True):
    account_id: Id
    product_id: ProductId


def decide_set_cart_item(cmd: SetCartItem, cart: CartState, product: ProductState) -> Append:
    if not product.live:
        raise UnknownProduct(
            f"product {cmd.product_id} is not in the catalog",
            field="product_id",
            product_id=cmd.product_id,
        )
    known = {i.product_id for i in cart.items}
    if cmd.product_id not in known and len(known) >= MAX_CART_ITEMS:
        raise UnknownProduct(f"a cart holds at most {MAX_CART_ITEMS} products", field="product_id")
    aggregate = cart_aggregate(cmd.account_id)
    event = CartItemSet(account_id=cmd.account_id, product_id=cmd.product_id, quantity=cmd.quantity)
    return Append(
        events=[event],
        expect={aggregate: cart.v},
        seen={aggregate: cart},
        result=result_json({"product_id": cmd.product_id, "quantity": cmd.quantity}),
    )


def decide_remove_cart_item(cmd: RemoveCartItem, cart: CartState) -> Append:
    """Removing a product that is not in the cart is refused: the caller's view was stale."""
    if cmd.product_id not in {i.product_id for i in cart.items}:
        raise UnknownProduct(
            f"product {cmd.product_id} is not in the cart",
            field="product_id",
            product_id=cmd.product_id,
        )
    aggregate = cart_aggregate(cmd.account_id)
    event = CartItemRemoved(account_id=cmd.account_id, product_id=cmd.product_id)
    return Append(
        events=[event],
        expect={aggregate: cart.v},
        seen={aggregate: cart},
        result=result_json({"product_id": cmd.product_id}),
    )


def _decide_set(cmd: SetCartItem, states: Mapping[str, AggregateState]) -> Append:
    return decide_set_cart_item(
        cmd,
        state_of(states, cart_aggregate(cmd.account_id), CartState),
        state_of(states, product_aggregate(cmd.product_id), ProductState),
    )


SET_CART_ITEM: Decider[SetCartItem] = Decider(
    reads=lambda c: [cart_aggregate(c.account_id), product_aggregate(c.product_id)],
    decide=_decide_set,
)

REMOVE_CART_ITEM: Decider[RemoveCartItem] = Decider(
    reads=lambda c: [cart_aggregate(c.account_id)],
    decide=lambda c, s: decide_remove_cart_item(
        c, state_of(s, cart_aggregate(c.account_id), CartState)
    ),
)
