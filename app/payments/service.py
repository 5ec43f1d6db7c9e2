"""The lifecycle steps that talk to the payment provider: pay, cancel (refund in full) and
refund. Each records its outcome through the one command runner; the provider is called
with idempotency keys derived from the log (see :mod:`app.payments.port`).

Paying is authorize → append ``OrderPaid`` (expects the order's version) → capture. When
the append loses (the order expired or was cancelled meanwhile) the authorization is
voided, so a payment racing an expiry ends with exactly one of them and no money taken
for an expired order. Refunds append first and then call the provider with the refund's
key: a retry after a crash in between repeats the provider call, which the key makes
harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from app.commands import execute
from app.commands.billing import order_aggregate
from app.commands.errors import (
    ConcurrentModification,
    DomainError,
    InvalidTransition,
    OrderNotFound,
    PaymentDeclined,
    PaymentTimedOut,
)
from app.commands.orders import (
    CancelOrder,
    ExpireOrder,
    IssueRefund,
    RecordPayment,
    RecordPaymentDeclined,
    shown,
)
from app.commands.runner import state_of
from app.payments.port import PaymentProvider, ProviderTimeout
from events.states import OrderState
from events.store import AppendResult, EventStore, Metadata


def attempt_key(order_id: str, attempt: int) -> str:
    return f"{order_id}:attempt:{attempt}"


async def _order(store: EventStore, order_id: str) -> OrderState:
    aggregate = order_aggregate(order_id)
    return state_of(await store.load([aggregate]), aggregate, OrderState)


async def pay(
    store: EventStore,
    provider: PaymentProvider,
    order_id: str,
    account_id: str,
    card_token: str,
    meta: Metadata,
    clock: Callable[[], float] = time.time,
) -> AppendResult:
    """Authorize and capture the order's total; raises ``PaymentDeclined`` (402),
    ``PaymentTimedOut`` (504) or an ``InvalidTransition`` (409) naming the status."""
    order = await _order(store, order_id)
    if not order.exists or order.account_id != account_id:
        raise OrderNotFound(f"order {order_id} does not exist", field="order_id")
    now = int(clock())
    if order.status == "awaiting_payment" and now >= order.reserved_until:
        # The expiry worker has not come by yet: expire it here, exactly as it would.
        try:
            await execute(store, ExpireOrder(order_id=order_id, at=now), meta)
        except DomainError:
            pass
        order = await _order(store, order_id)
    if order.status != "awaiting_payment":
        status = shown(order.status)
        raise InvalidTransition(
            f"order {order_id} is {status}: it cannot be paid",
            field="order_id",
            current_status=status,
        )
    attempt = order.payment_attempts + 1
    try:
        auth = await provider.authorize(
            attempt_key(order_id, attempt), order.total, order.currency, card_token
        )
    except ProviderTimeout as exc:
        raise PaymentTimedOut(
            "the payment provider did not answer; the order is still payable", field="card_token"
        ) from exc
    if auth.status == "declined":
        decline = RecordPaymentDeclined(
            order_id=order_id, attempt=attempt, provider=provider.name, reason=auth.reason
        )
        try:
            await execute(store, decline, meta)
        except ConcurrentModification:
            pass  # a concurrent retry of the same attempt recorded it
        raise PaymentDeclined(f"the card was declined: {auth.reason}", field="card_token")
    record = RecordPayment(
        order_id=order_id,
        attempt=attempt,
        payment_id=auth.id,
        amount=auth.amount,
        at=now,
        provider=provider.name,
    )
    try:
        result = await execute(store, record, meta)
    except DomainError:
        current = await _order(store, order_id)
        if current.payment_id == auth.id:  # a concurrent retry of this attempt won
            await provider.capture(auth.id)
            raise
        await provider.void(auth.id)
        raise
    await provider.capture(auth.id)
    return result


async def cancel(
    store: EventStore,
    provider: PaymentProvider,
    command: CancelOrder,
    meta: Metadata,
    idempotency_key: str | None = None,
) -> AppendResult:
    """Cancel, then refund what the cancellation says was left of the captured amount."""
    result = await execute(store, command, meta, idempotency_key=idempotency_key)
    outcome: dict[str, Any] = msgspec.json.decode(result.result)
    if outcome.get("refunded") and outcome.get("payment_id"):
        await provider.refund(
            f"{command.order_id}:cancel", outcome["payment_id"], int(outcome["refunded"])
        )
    return result


async def refund(
    store: EventStore,
    provider: PaymentProvider,
    command: IssueRefund,
    meta: Metadata,
    idempotency_key: str | None = None,
) -> AppendResult:
    result = await execute(store, command, meta, idempotency_key=idempotency_key)
    outcome: dict[str, Any] = msgspec.json.decode(result.result)
    if outcome.get("payment_id"):
        await provider.refund(outcome["refund_id"], outcome["payment_id"], int(outcome["amount"]))
    return result
