"""``GET /carts/{account_id}``: a customer's cart from the read model (owner or admin).

The signed-in customer's own ``GET /cart`` reads the write side instead, so a change shows
at once and is priced now; this route answers from the ``carts`` view (product ids and
quantities, no prices), with the usual ``min_position`` read-your-writes wait.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter

from app.auth import Principal
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.read_side import read_side, store_errors
from projections.read_models import CartView


class CartItem(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    quantity: int


class AccountCart(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    items: list[CartItem]
    """In the order the products were added."""
    last_order_id: str | None = None
    """The order the last checkout made of this cart."""
    updated_at: datetime | None = None


@get(
    "/carts/{account_id:str}",
    tags=["cart"],
    operation_id="getAccountCart",
    responses=problem_responses(400, 401, 404),
)
async def get_account_cart(
    request: Request[Principal, Any, Any],
    state: State,
    account_id: Annotated[str, PathParameter(max_length=100)],
    min_position: MinPosition = None,
) -> Response[AccountCart]:
    """A customer's cart as the view holds it: the caller's own, or any for an admin.
    Anyone else's is a 404; so is an account that never had a cart (it is empty)."""
    user = request.user
    if account_id != user.account_id and user.role != "admin":
        raise NotFoundException("no such cart")
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    with store_errors():
        doc = await CartView.get(account_id)
    if doc is None:
        raise NotFoundException("no such cart")
    cart = AccountCart(
        account_id=account_id,
        items=[CartItem(product_id=i.product_id, quantity=i.quantity) for i in doc.items.values()],
        last_order_id=doc.last_order_id,
        updated_at=doc.updated_at,
    )
    return view_response(cart, view)
