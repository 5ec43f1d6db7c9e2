"""The order lifecycle over HTTP: checkout, payment, cancellation, refunds, shipment and
delivery. Every refusal of a step the order's status does not allow is a 409 naming the
current status (``current_status``); nothing is appended then."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter

from app.auth import Principal, admin_only
from app.commands import execute
from app.commands.billing import BillLine
from app.commands.cart import cart_aggregate
from app.commands.checkout import CartChanged, Checkout, Placed, placed_of
from app.commands.orders import CancelOrder, IssueRefund, MarkDelivered, ShipOrder
from app.commands.runner import state_of
from app.controllers.orders import IdempotencyKey
from app.controllers.schemas import Body, Position
from app.payments import payment_provider
from app.payments.service import cancel, pay, refund
from app.problems import problem_responses
from app.services import command_meta, services
from events.states import CartState
from events.store import AppendResult

OrderPath = Annotated[str, PathParameter(min_length=1, max_length=100, description="Order id.")]
CHECKOUT_ATTEMPTS = 5


class StatusResponse(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    status: str
    position: Position


class RefundResponse(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    status: str
    refund_id: str
    amount: int
    position: Position


class ShipmentResponse(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    status: str
    shipment_id: str
    position: Position


class PaymentBody(Body, frozen=True, kw_only=True):
    card_token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class CancelBody(Body, frozen=True, kw_only=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class RefundBody(Body, frozen=True, kw_only=True):
    amount: Annotated[int, msgspec.Meta(ge=1, le=10**12)]
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class ShipmentBody(Body, frozen=True, kw_only=True):
    carrier: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    tracking_code: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


def _status(result: AppendResult) -> StatusResponse:
    outcome = msgspec.json.decode(result.result)
    return StatusResponse(
        order_id=outcome["order_id"], status=outcome["status"], position=result.position
    )


@post(
    "/checkout",
    tags=["orders"],
    operation_id="checkout",
    status_code=201,
    responses=problem_responses(400, 401, 409, 422),
)
async def checkout(
    request: Request[Principal, Any, Any], state: State, idempotency_key: IdempotencyKey = None
) -> Placed:
    """Turn the cart into an order awaiting payment, reserving every line's stock until
    ``reserved_until``; 409 naming the line when one lacks stock. The cart is emptied."""
    svc = services(state)
    account_id = request.user.account_id
    meta = command_meta(request, f"account:{account_id}")
    key = cart_aggregate(account_id)
    for n in range(CHECKOUT_ATTEMPTS):
        cart = state_of(await svc.store.load([key]), key, CartState)
        command = Checkout(
            account_id=account_id,
            lines=[BillLine(product_id=i.product_id, quantity=i.quantity) for i in cart.items],
            ttl_seconds=svc.settings.reservation_ttl_seconds,
        )
        try:
            result = await execute(svc.store, command, meta, idempotency_key=idempotency_key)
        except CartChanged:
            if n == CHECKOUT_ATTEMPTS - 1:
                raise
            continue
        break
    return placed_of(result)


@post(
    "/orders/{order_id:str}/payment",
    tags=["orders"],
    operation_id="payOrder",
    status_code=200,
    responses=problem_responses(400, 401, 402, 404, 409, 504),
)
async def pay_order(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: OrderPath,
    data: JSONBody[PaymentBody],
) -> StatusResponse:
    """Authorize and capture the order's total through the payment provider. Declined: 402,
    the order stays payable. Retries never charge twice."""
    return await pay_for(request, state, order_id, data)


async def pay_for(
    request: Request[Principal, Any, Any], state: State, order_id: str, data: PaymentBody
) -> StatusResponse:
    svc = services(state)
    account_id = request.user.account_id
    result = await pay(
        svc.store,
        payment_provider(state),
        order_id,
        account_id,
        data.card_token,
        command_meta(request, f"account:{account_id}"),
    )
    return _status(result)


@post(
    "/orders/{order_id:str}/cancel",
    tags=["orders"],
    operation_id="cancelOrder",
    status_code=200,
    responses=problem_responses(400, 401, 404, 409, 422),
)
async def cancel_order(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: OrderPath,
    data: JSONBody[CancelBody | None] = None,
    idempotency_key: IdempotencyKey = None,
) -> StatusResponse:
    """The owner (or an admin) cancels before shipment: the stock returns and a captured
    payment is refunded in full."""
    return await cancel_for(request, state, order_id, data, idempotency_key)


async def cancel_for(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: str,
    data: CancelBody | None,
    idempotency_key: str | None,
) -> StatusResponse:
    svc = services(state)
    user = request.user
    command = CancelOrder(
        order_id=order_id,
        account_id=user.account_id,
        by_admin=user.role == "admin",
        reason=data.reason if data else "",
    )
    meta = command_meta(request, f"account:{user.account_id}")
    key = f"cancel:{order_id}:{idempotency_key}" if idempotency_key else None
    return _status(await cancel(svc.store, payment_provider(state), command, meta, key))


@post(
    "/orders/{order_id:str}/refunds",
    tags=["orders"],
    operation_id="refundOrder",
    status_code=201,
    guards=[admin_only],
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def refund_order(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: OrderPath,
    data: JSONBody[RefundBody],
    idempotency_key: IdempotencyKey = None,
) -> RefundResponse:
    """Refund part or all of what was captured (never more)."""
    svc = services(state)
    command = IssueRefund(order_id=order_id, amount=data.amount, reason=data.reason)
    meta = command_meta(request, f"account:{request.user.account_id}")
    key = f"refund:{order_id}:{idempotency_key}" if idempotency_key else None
    result = await refund(svc.store, payment_provider(state), command, meta, key)
    outcome = msgspec.json.decode(result.result)
    return RefundResponse(
        order_id=order_id,
        status=outcome["status"],
        refund_id=outcome["refund_id"],
        amount=outcome["amount"],
        position=result.position,
    )


@post(
    "/orders/{order_id:str}/shipments",
    tags=["orders"],
    operation_id="shipOrder",
    status_code=201,
    guards=[admin_only],
    responses=problem_responses(400, 401, 403, 404, 409),
)
async def ship_order(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: OrderPath,
    data: JSONBody[ShipmentBody],
) -> ShipmentResponse:
    """Ship a paid order."""
    svc = services(state)
    command = ShipOrder(order_id=order_id, carrier=data.carrier, tracking_code=data.tracking_code)
    meta = command_meta(request, f"account:{request.user.account_id}")
    result = await execute(svc.store, command, meta)
    outcome = msgspec.json.decode(result.result)
    return ShipmentResponse(
        order_id=order_id,
        status=outcome["status"],
        shipment_id=outcome["shipment_id"],
        position=result.position,
    )


@post(
    "/orders/{order_id:str}/delivered",
    tags=["orders"],
    operation_id="markOrderDelivered",
    status_code=200,
    guards=[admin_only],
    responses=problem_responses(400, 401, 403, 404, 409),
)
async def mark_delivered(
    request: Request[Principal, Any, Any], state: State, order_id: OrderPath
) -> StatusResponse:
    """A shipped order reached its customer."""
    svc = services(state)
    meta = command_meta(request, f"account:{request.user.account_id}")
    return _status(await execute(svc.store, MarkDelivered(order_id=order_id), meta))


LIFECYCLE_ROUTES: list[Any] = [
    checkout,
    pay_order,
    cancel_order,
    refund_order,
    ship_order,
    mark_delivered,
]
