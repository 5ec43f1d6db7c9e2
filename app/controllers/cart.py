"""The signed-in customer's cart: ``GET /cart``, ``PUT`` / ``DELETE /cart/items/{product_id}``.

``GET /cart`` reads the write side's decision state (the cart and its products' prices):
the cart is the caller's own and must show a change at once.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, put
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter

from app.auth import Principal
from app.commands import execute
from app.commands.billing import Quantity
from app.commands.cart import RemoveCartItem, SetCartItem, cart_aggregate
from app.commands.catalog import product_aggregate
from app.commands.runner import state_of
from app.controllers.schemas import Body, Position
from app.problems import problem_responses
from app.services import command_meta, services
from events.states import CartState, ProductState
from events.store import EventStore

ProductPath = Annotated[str, PathParameter(min_length=1, max_length=100, description="Product id.")]


class CartItemBody(Body, frozen=True, kw_only=True):
    quantity: Quantity


class CartLine(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    name: str
    quantity: int
    unit_price: int
    line_total: int
    available: bool
    """False when the product left the catalog or has less stock than the quantity."""


class Cart(msgspec.Struct, frozen=True, kw_only=True):
    items: list[CartLine]
    total: int
    currency: str
    position: Position | None = None


async def priced_cart(store: EventStore, account_id: str, currency: str) -> Cart:
    cart_key = cart_aggregate(account_id)
    cart = state_of(await store.load([cart_key]), cart_key, CartState)
    keys = [product_aggregate(i.product_id) for i in cart.items]
    products = await store.load(keys)
    lines: list[CartLine] = []
    for item, key in zip(cart.items, keys, strict=True):
        product = state_of(products, key, ProductState)
        currency = product.currency if product.live else currency
        lines.append(
            CartLine(
                product_id=item.product_id,
                name=product.name,
                quantity=item.quantity,
                unit_price=product.price,
                line_total=product.price * item.quantity,
                available=product.live and product.stock >= item.quantity,
            )
        )
    return Cart(items=lines, total=sum(ln.line_total for ln in lines), currency=currency)


async def caller_cart(request: Request[Principal, Any, Any], state: State) -> Cart:
    svc = services(state)
    return await priced_cart(svc.store, request.user.account_id, svc.settings.default_currency)


async def change_cart(
    request: Request[Principal, Any, Any], state: State, command: SetCartItem | RemoveCartItem
) -> Cart:
    """Execute a cart command and answer the cart after it (with the write's position)."""
    svc = services(state)
    account_id = request.user.account_id
    result = await execute(svc.store, command, command_meta(request, f"account:{account_id}"))
    cart = await priced_cart(svc.store, account_id, svc.settings.default_currency)
    return msgspec.structs.replace(cart, position=result.position)


class CartController(Controller):
    path = "/cart"
    tags = ["cart"]

    @get("/", operation_id="getCart", responses=problem_responses(401))
    async def get_cart(self, request: Request[Principal, Any, Any], state: State) -> Cart:
        """The caller's cart at current prices."""
        return await caller_cart(request, state)

    @put(
        "/items/{product_id:str}",
        operation_id="setCartItem",
        responses=problem_responses(400, 401, 409, 422),
    )
    async def set_item(
        self,
        request: Request[Principal, Any, Any],
        state: State,
        product_id: ProductPath,
        data: JSONBody[CartItemBody],
    ) -> Cart:
        """Put ``quantity`` units of a product in the cart (replacing its quantity)."""
        command = SetCartItem(
            account_id=request.user.account_id, product_id=product_id, quantity=data.quantity
        )
        return await change_cart(request, state, command)

    @delete(
        "/items/{product_id:str}",
        operation_id="removeCartItem",
        status_code=200,
        responses=problem_responses(400, 401, 422),
    )
    async def remove_item(
        self, request: Request[Principal, Any, Any], state: State, product_id: ProductPath
    ) -> Cart:
        """Take a product out of the cart."""
        command = RemoveCartItem(account_id=request.user.account_id, product_id=product_id)
        return await change_cart(request, state, command)
