"""The order lifecycle after checkout (or bill-now): payment outcomes, expiry, cancellation,
refunds, shipment and delivery. Each step is one append to the order's stream that expects
the order's version as read, so two steps racing for one order (a payment and an expiry,
a cancel and a shipment) end with exactly one of them: the loser re-decides on the new
status and is refused.

Partitions: payment, expiry and cancellation also change their products' ``stock`` /
``reserved`` counters (other partitions, no version expected); declines, refunds,
shipments and deliveries touch the order's partition only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Protocol, TypeVar

import msgspec

from app.commands.base import Command, compared_by, request_fingerprint, result_json
from app.commands.billing import order_aggregate
from app.commands.errors import (
    ConcurrentModification,
    InvalidTransition,
    OrderNotCancellable,
    OrderNotFound,
    RefundTooLarge,
)
from app.commands.runner import Decider, state_of
from events.states import OrderState
from events.store import Append
from events.types import (
    Event,
    OrderCancelled,
    OrderDelivered,
    OrderExpired,
    OrderPaid,
    OrderShipped,
    PaymentDeclined,
    RefundIssued,
)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Text = Annotated[str, msgspec.Meta(max_length=500)]

CANCELLABLE = frozenset({"awaiting_payment", "billed", "paid", "partially_refunded", "refunded"})
REFUNDABLE = frozenset({"billed", "paid", "shipped", "delivered", "partially_refunded"})
SHIPPABLE = frozenset({"billed", "paid"})


def shown(status: str) -> str:
    """The status as the API shows it: a bill-now order is ``paid``."""
    return "paid" if status == "billed" else status


def _found(order_id: str, order: OrderState, account_id: str | None = None) -> None:
    """Refuse a missing order, or (``account_id`` given) one of another account, alike."""
    if not order.exists or (account_id is not None and order.account_id != account_id):
        raise OrderNotFound(f"order {order_id} does not exist", field="order_id")


def _refuse(order_id: str, order: OrderState, step: str) -> InvalidTransition:
    status = shown(order.status)
    return InvalidTransition(
        f"order {order_id} is {status}: it cannot be {step}",
        field="order_id",
        current_status=status,
    )


def _append(order_id: str, order: OrderState, event: Event, **result: object) -> Append:
    aggregate = order_aggregate(order_id)
    return Append(
        events=[event],
        expect={aggregate: order.v},
        seen={aggregate: order},
        result=result_json({"order_id": order_id, **result}),
    )


class _OrderCommand(Protocol):
    @property
    def order_id(self) -> str: ...


C = TypeVar("C", bound=_OrderCommand)


def _for_order(
    decide: Callable[[C, OrderState], Append], request: Callable[[C], str] | None = None
) -> Decider[C]:
    """A decider that reads only the command's order. With ``request``, the fingerprint
    that the command's result JSON keeps, a key reused for another request is refused."""
    decider: Decider[C] = Decider(
        reads=lambda c: [order_aggregate(c.order_id)],
        decide=lambda c, s: decide(c, state_of(s, order_aggregate(c.order_id), OrderState)),
    )
    return decider if request is None else replace(decider, replayed=compared_by(request))


# -- payment outcomes (decided after the provider answered; see app.payments) -----------


class RecordPaymentDeclined(Command, frozen=True, kw_only=True):
    order_id: Id
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    provider: Text = "sandbox"
    reason: Text = ""


class RecordPayment(Command, frozen=True, kw_only=True):
    """Attempt ``attempt`` was authorized; ``at`` (epoch seconds) is when, so a payment after
    the reservation's deadline is refused even before the expiry worker has run."""

    order_id: Id
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    payment_id: Id
    amount: Annotated[int, msgspec.Meta(ge=0)]
    at: int
    provider: Text = "sandbox"


def _payable(order_id: str, order: OrderState, attempt: int) -> None:
    _found(order_id, order)
    if order.status != "awaiting_payment":
        raise _refuse(order_id, order, "paid")
    if attempt != order.payment_attempts + 1:
        raise ConcurrentModification(
            f"payment attempt {attempt} of order {order_id} was already decided"
        )


def decide_payment_declined(cmd: RecordPaymentDeclined, order: OrderState) -> Append:
    _payable(cmd.order_id, order, cmd.attempt)
    event = PaymentDeclined(
        order_id=cmd.order_id, attempt=cmd.attempt, provider=cmd.provider, reason=cmd.reason
    )
    return _append(cmd.order_id, order, event, status=shown(order.status))


def decide_payment(cmd: RecordPayment, order: OrderState) -> Append:
    _payable(cmd.order_id, order, cmd.attempt)
    if cmd.at >= order.reserved_until:
        raise InvalidTransition(
            f"order {cmd.order_id}'s reservation ran out: it cannot be paid",
            field="order_id",
            current_status="expired",
        )
    if cmd.amount != order.total:
        raise InvalidTransition(
            f"order {cmd.order_id} totals {order.total}, the payment was {cmd.amount}",
            field="amount",
            current_status=order.status,
        )
    event = OrderPaid(
        order_id=cmd.order_id,
        attempt=cmd.attempt,
        payment_id=cmd.payment_id,
        amount=cmd.amount,
        currency=order.currency,
        provider=cmd.provider,
        lines=list(order.lines),
        account_id=order.account_id,
    )
    return _append(cmd.order_id, order, event, status="paid", payment_id=cmd.payment_id)


# -- expiry -------------------------------------------------------------------------------


class ExpireOrder(Command, frozen=True, kw_only=True):
    """Expire an unpaid order whose reservation ran out by ``at`` (epoch seconds)."""

    order_id: Id
    at: int


def decide_expire(cmd: ExpireOrder, order: OrderState) -> Append:
    _found(cmd.order_id, order)
    if order.status != "awaiting_payment":
        raise _refuse(cmd.order_id, order, "expired")
    if cmd.at < order.reserved_until:
        raise InvalidTransition(
            f"order {cmd.order_id} is reserved until {order.reserved_until}",
            field="order_id",
            current_status=order.status,
        )
    event = OrderExpired(order_id=cmd.order_id, lines=list(order.lines))
    return _append(cmd.order_id, order, event, status="expired")


# -- cancellation and refunds ---------------------------------------------------------------


class CancelOrder(Command, frozen=True, kw_only=True):
    """Cancel an order on behalf of ``account_id`` (its owner) or, ``by_admin``, anyone's.

    Nobody cancels after shipment: the goods have left, so the stock cannot come back."""

    order_id: Id
    account_id: Id
    by_admin: bool = False
    reason: Text = ""


def cancel_request(cmd: CancelOrder) -> str:
    """The fingerprint of a cancellation (:func:`~app.commands.base.request_fingerprint`):
    who cancels and why, its account and its reason (``by_admin`` follows from the
    account). The order is in the key's scope (``cancel:<order>:<key>``), the actor is
    not: another account reusing the key on the order is another request."""
    return request_fingerprint(cmd.account_id, cmd.reason)


def decide_cancel_order(cmd: CancelOrder, order: OrderState) -> Append:
    """Reserved stock is released, taken stock returns, and whatever was taken and not yet
    refunded is refunded in full (``refunded``; app.payments pays it back)."""
    _found(cmd.order_id, order, None if cmd.by_admin else cmd.account_id)
    if order.status not in CANCELLABLE or order.was_shipped:
        status = shown(order.status)
        raise OrderNotCancellable(
            f"order {cmd.order_id} is {status}: it cannot be cancelled",
            field="order_id",
            current_status=status,
        )
    # A bill-now order took no payment through the port: there is nothing to pay back.
    refund = order.captured - order.refunded
    event = OrderCancelled(
        order_id=cmd.order_id,
        account_id=order.account_id,
        lines=list(order.lines),
        reason=cmd.reason,
        reserved=order.status == "awaiting_payment",
        refunded=max(refund, 0),
    )
    return _append(
        cmd.order_id,
        order,
        event,
        status="cancelled",
        refunded=event.refunded,
        payment_id=order.payment_id,
        request=cancel_request(cmd),
    )


class IssueRefund(Command, frozen=True, kw_only=True):
    order_id: Id
    amount: Annotated[int, msgspec.Meta(ge=1)]
    reason: Text = ""


def refund_request(cmd: IssueRefund) -> str:
    """The fingerprint of a refund (:func:`~app.commands.base.request_fingerprint`): its
    amount and its reason. The order is in the key's scope (``refund:<order>:<key>``); the
    refund id is drawn from the order's state, and the admin who asks is left out: two
    admins asking for one refund under one key ask for the same refund."""
    return request_fingerprint(cmd.amount, cmd.reason)


def decide_refund(cmd: IssueRefund, order: OrderState) -> Append:
    _found(cmd.order_id, order)
    if order.status not in REFUNDABLE:
        raise _refuse(cmd.order_id, order, "refunded")
    left = order.takings - order.refunded
    if cmd.amount > left:
        raise RefundTooLarge(
            f"order {cmd.order_id} has {left} left to refund, not {cmd.amount}",
            field="amount",
            refundable=left,
        )
    refund_id = f"{cmd.order_id}-r{order.refunds + 1}"
    event = RefundIssued(
        order_id=cmd.order_id,
        refund_id=refund_id,
        amount=cmd.amount,
        reason=cmd.reason,
        full=cmd.amount == left,
    )
    status = "refunded" if cmd.amount == left else "partially_refunded"
    return _append(
        cmd.order_id,
        order,
        event,
        status=status,
        refund_id=refund_id,
        amount=cmd.amount,
        payment_id=order.payment_id,
        request=refund_request(cmd),
    )


# -- fulfilment ---------------------------------------------------------------------------


class ShipOrder(Command, frozen=True, kw_only=True):
    order_id: Id
    carrier: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    tracking_code: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


def decide_ship(cmd: ShipOrder, order: OrderState) -> Append:
    _found(cmd.order_id, order)
    if order.status not in SHIPPABLE:
        raise _refuse(cmd.order_id, order, "shipped")
    shipment_id = f"{cmd.order_id}-s{order.shipments + 1}"
    event = OrderShipped(
        order_id=cmd.order_id,
        shipment_id=shipment_id,
        carrier=cmd.carrier,
        tracking_code=cmd.tracking_code,
    )
    return _append(cmd.order_id, order, event, status="shipped", shipment_id=shipment_id)


class MarkDelivered(Command, frozen=True, kw_only=True):
    order_id: Id


def decide_delivered(cmd: MarkDelivered, order: OrderState) -> Append:
    _found(cmd.order_id, order)
    if order.status != "shipped":
        raise _refuse(cmd.order_id, order, "delivered")
    return _append(cmd.order_id, order, OrderDelivered(order_id=cmd.order_id), status="delivered")


RECORD_PAYMENT_DECLINED = _for_order(decide_payment_declined)
RECORD_PAYMENT = _for_order(decide_payment)
EXPIRE_ORDER = _for_order(decide_expire)
CANCEL_ORDER = _for_order(decide_cancel_order, cancel_request)
ISSUE_REFUND = _for_order(decide_refund, refund_request)
SHIP_ORDER = _for_order(decide_ship)
MARK_DELIVERED = _for_order(decide_delivered)
"""Each result JSON has ``order_id`` and the new ``status``, plus the step's ids; a
cancellation's and a refund's also the request's fingerprint (``request``), which a replay
under their ``Idempotency-Key`` is compared with."""
