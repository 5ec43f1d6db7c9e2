"""Checkout on a Redis Cluster when the order, cart, account and products span hash slots:
the billing saga's steps (:mod:`app.commands.saga`) with two differences. The confirm is
``OrderPlaced(reserved=True)`` (the order awaits payment; the reservations then belong to
its payment, expiry or cancellation, whose product effects follow as counter effects,
:mod:`events.effects`), and step 5 empties the cart (``CartCheckedOut``, in the cart's
slot, once) instead of taking the stock. On one node, or one slot, the single append of
:mod:`app.commands.checkout`, unchanged.
"""

from __future__ import annotations

import msgspec

from app.commands.base import result_json
from app.commands.billing import order_aggregate
from app.commands.cart import cart_aggregate
from app.commands.checkout import CHECKOUT, Checkout, checkout_request
from app.commands.runner import run, state_of
from app.commands.saga import BillingSaga, claim
from events.errors import VersionConflict
from events.states import CartState, OrderState
from events.store import Append, AppendResult, EventStore, Metadata
from events.types import CartCheckedOut, Event, OrderBillingStarted, OrderPlaced


async def check_out(
    store: EventStore, command: Checkout, meta: Metadata, *, idempotency_key: str | None = None
) -> AppendResult:
    """Check out ``command``: the single append where its keys share a slot, else the saga.
    The result is the checkout's JSON (:func:`app.commands.checkout.placed_of`) either way."""
    command = CHECKOUT.prepare(command)
    scope = CHECKOUT.scope(command, idempotency_key) if idempotency_key else None
    if scope is not None:
        command = msgspec.structs.replace(command, order_id=await claim(store, scope, command))
    saga = CheckoutSaga(store, meta)
    existing = await saga.order(command.order_id or "")
    if existing.exists and not existing.placing:  # placed by a single append: replay it
        return await run(CHECKOUT, store, command, meta, idempotency_key=idempotency_key)
    if existing.exists and scope is not None:
        await compare_retry(store, command, scope, existing)
    if not existing.exists:
        append = CHECKOUT.decide(command, await store.load(CHECKOUT.reads(command)))
        append.idempotency_key, append.idempotency_home = scope, CHECKOUT.reads(command)[0]
        if store.append_slots(append) is None:
            return await run(CHECKOUT, store, command, meta, idempotency_key=idempotency_key)
    return await saga.run(command, scope)


async def compare_retry(
    store: EventStore, command: Checkout, scope: str, order: OrderState
) -> None:
    """Refuse a key reused for another checkout (``idempotency-key-reused``) before its
    saga runs again, with :data:`~app.commands.checkout.CHECKOUT`'s own ``replayed``, as
    on one node: against the confirm's record (one stored before checkouts kept a
    fingerprint answers as before) or, not confirmed yet, the lines the saga places."""
    recorded = await store.recorded(scope, order_aggregate(command.order_id or ""))
    if recorded is None:
        pending = result_json({"request": checkout_request(order.lines)})
        recorded = AppendResult(entry_ids=[], duplicate=True, result=pending)
    CHECKOUT.replayed(command, recorded)


class CheckoutSaga(BillingSaga):
    """The steps of one checkout saga (see the module docstring)."""

    async def start(self, command: Checkout) -> OrderState:  # type: ignore[override]
        order_id = command.order_id or ""
        aggregate = order_aggregate(order_id)
        states = await self.store.load(CHECKOUT.reads(command))
        placed = CHECKOUT.decide(command, states).events[0]
        assert isinstance(placed, OrderPlaced)
        started = OrderBillingStarted(
            order_id=order_id,
            account_id=command.account_id,
            lines=placed.lines,
            total=placed.total,
            currency=placed.currency,
            reserved_until=command.reserved_until,
            place=True,
        )
        order = state_of(states, aggregate, OrderState)
        try:
            await self.store.append(
                Append(
                    events=[started], expect={aggregate: 0}, seen={aggregate: order}, meta=self.meta
                )
            )
        except VersionConflict:
            pass  # a concurrent retry started it first
        return await self.order(order_id)

    def same_request(self, command: object, order_id: str, order: OrderState) -> bool:
        """:func:`compare_retry` compared the retry already: the cart it read may be empty
        (the first attempt emptied it) or the lines the saga places."""
        return True

    def confirmation(self, order_id: str, order: OrderState) -> tuple[Event, str]:
        event = OrderPlaced(
            order_id=order_id,
            account_id=order.account_id,
            lines=list(order.lines),
            total=order.total,
            currency=order.currency,
            reserved_until=order.reserved_until,
            reserved=True,
        )
        request = checkout_request(order.lines)
        body = {**msgspec.to_builtins(event), "status": "awaiting_payment", "request": request}
        return event, result_json(body)

    async def after_confirm(self, order_id: str, order: OrderState) -> None:
        """Step 5: the cart empties, once (a retry finds the step's record)."""
        aggregate = cart_aggregate(order.account_id)
        for _ in range(3):
            cart = state_of(await self.store.load([aggregate]), aggregate, CartState)
            event = CartCheckedOut(account_id=order.account_id, order_id=order_id)
            try:
                await self.store.append(
                    Append(
                        events=[event],
                        expect={aggregate: cart.v},
                        seen={aggregate: cart},
                        meta=self.meta,
                        idempotency_key=f"saga:{order_id}:cart",
                        idempotency_home=aggregate,
                    )
                )
                return
            except VersionConflict:
                continue
