"""Portuguese aliases of the lifecycle for the seed-era clients (``carrinho``, ``pagamento``,
``cancelamento``): the same commands and answers as ``/cart``, ``/orders/{id}/payment`` and
``/orders/{id}/cancel``, listed under the legacy tag."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody

from app.auth import Principal
from app.commands.cart import RemoveCartItem, SetCartItem
from app.controllers.cart import Cart, CartItemBody, ProductPath, caller_cart, change_cart
from app.controllers.lifecycle import (
    CancelBody,
    OrderPath,
    PaymentBody,
    StatusResponse,
    cancel_for,
    pay_for,
)
from app.controllers.orders import IdempotencyKey
from app.problems import problem_responses


@get("/carrinho", tags=["legacy"], operation_id="verCarrinho", responses=problem_responses(401))
async def ver_carrinho(request: Request[Principal, Any, Any], state: State) -> Cart:
    """Alias of ``GET /cart``."""
    return await caller_cart(request, state)


@put(
    "/carrinho/itens/{product_id:str}",
    tags=["legacy"],
    operation_id="porNoCarrinho",
    responses=problem_responses(400, 401, 409, 422),
)
async def por_no_carrinho(
    request: Request[Principal, Any, Any],
    state: State,
    product_id: ProductPath,
    data: JSONBody[CartItemBody],
) -> Cart:
    """Alias of ``PUT /cart/items/{product_id}``."""
    command = SetCartItem(
        account_id=request.user.account_id, product_id=product_id, quantity=data.quantity
    )
    return await change_cart(request, state, command)


@delete(
    "/carrinho/itens/{product_id:str}",
    tags=["legacy"],
    operation_id="tirarDoCarrinho",
    status_code=200,
    responses=problem_responses(400, 401, 422),
)
async def tirar_do_carrinho(
    request: Request[Principal, Any, Any], state: State, product_id: ProductPath
) -> Cart:
    """Alias of ``DELETE /cart/items/{product_id}``."""
    command = RemoveCartItem(account_id=request.user.account_id, product_id=product_id)
    return await change_cart(request, state, command)


@post(
    "/pedidos/{order_id:str}/pagamento",
    tags=["legacy"],
    operation_id="pagarPedido",
    status_code=200,
    responses=problem_responses(400, 401, 402, 404, 409, 504),
)
async def pagar_pedido(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: OrderPath,
    data: JSONBody[PaymentBody],
) -> StatusResponse:
    """Alias of ``POST /orders/{id}/payment``."""
    return await pay_for(request, state, order_id, data)


@post(
    "/pedidos/{order_id:str}/cancelamento",
    tags=["legacy"],
    operation_id="cancelarPedido",
    status_code=200,
    responses=problem_responses(400, 401, 404, 409, 422),
)
async def cancelar_pedido(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: OrderPath,
    data: JSONBody[CancelBody | None] = None,
    idempotency_key: IdempotencyKey = None,
) -> StatusResponse:
    """Alias of ``POST /orders/{id}/cancel``."""
    return await cancel_for(request, state, order_id, data, idempotency_key)


LEGACY_LIFECYCLE_ROUTES: list[Any] = [
    ver_carrinho,
    por_no_carrinho,
    tirar_do_carrinho,
    pagar_pedido,
    cancelar_pedido,
]
