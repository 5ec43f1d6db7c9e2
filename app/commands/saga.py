"""The billing saga: ``POST /orders`` on a Redis Cluster when the order, its account and its
products (and the idempotency record) do not share one hash slot.

One node, or one slot: the single atomic append of :mod:`app.commands.billing`, unchanged.
Otherwise a saga of single-slot appends, each idempotent (its idempotency record lives in
the slot it writes, :meth:`events.keys.Keys.idem`), in this order:

1. *claim* (the key's slot): ``SET NX`` of ``saga:{pK}:<scope>`` → the order id, so every
   retry with the same Idempotency-Key works on the same order;
2. *start* (the order's slot): ``OrderBillingStarted`` with lines, prices, total and the
   deadline ``reserved_until``; expects the order absent;
3. *reserve* (each product's slot): ``StockReserved``, guarded ``stock >= quantity``;
4. *confirm* (the order's slot): ``OrderBilled(reserved=True)`` with the idempotency
   record, expecting the version the start left. The order's slot is the arbiter: confirm
   and *abandon* (``OrderBillingAbandoned``) both expect that version, so only one wins;
5. *take* (each product's slot): ``StockTaken`` (``reserved`` drops), after confirm only;
6. *compensate*: after abandon only, ``StockReleased`` for each reservation that exists.

Whatever a crash leaves, the expiry worker (:mod:`workers.expiry`) settles each
``StockReserved`` once its deadline passed (:func:`settle`): take it if the order was
billed, else abandon the order and release it. A retried command (:func:`bill`) re-runs
the steps, which are no-ops where they already happened.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import msgspec
import structlog
from redis.asyncio.cluster import RedisCluster

from app.commands.accounts import account_aggregate
from app.commands.billing import (
    BILL_ORDER,
    BillLine,
    BillOrder,
    decide_bill_order,
    fingerprint,
    idempotency_scope,
    order_aggregate,
)
from app.commands.catalog import product_aggregate
from app.commands.errors import (
    ConcurrentModification,
    DomainError,
    IdempotencyKeyReused,
    InsufficientStock,
    OrderAlreadyExists,
    UnknownProduct,
)
from app.commands.runner import run, state_of
from events.errors import AggregateMissing, GuardFailed, VersionConflict
from events.states import AccountState, OrderState, ProductState
from events.store import IDEMPOTENCY_TTL, Append, AppendResult, EventStore, Metadata
from events.types import (
    Event,
    OrderBilled,
    OrderBillingAbandoned,
    OrderBillingStarted,
    StockReleased,
    StockReserved,
    StockTaken,
)

SAGA_TTL_SECONDS = 60
"""How long a saga's reservations hold before the expiry worker may abandon it: far longer
than the steps take, short enough that a crash returns the stock soon."""

log = structlog.get_logger("app.commands.saga")

COUNTERS_ONLY = ProductState(v=1)
"""What a product step passes as the state it saw: its events change only the ``stock`` and
``reserved`` counters, whose deltas (and floors) do not depend on the values read, so no
step reads the product first; the append checks that it exists and is not deleted."""


UNBILLED = frozenset({"abandoned", ""})
"""Statuses of a saga's order whose reservations go back: abandoned (or, defensively, no
order at all). Any other status after ``reserving`` means the confirm was written, and the
reservations are taken whatever happened to the order since."""


class BillingAbandoned(DomainError):
    """A retry found its saga abandoned (a product ran out, or it passed its deadline);
    nothing was billed, and a new Idempotency-Key starts a new order."""

    status = 409
    slug = "billing-abandoned"
    title = "Billing abandoned"


def _wanted(order: OrderState) -> dict[str, int]:
    """Units per product of an order's lines, in line order (the order the steps run in)."""
    wanted: dict[str, int] = {}
    for line in order.lines:
        wanted[line.product_id] = wanted.get(line.product_id, 0) + line.quantity
    return wanted


def _step_key(order_id: str, step: str, product_id: str) -> str:
    return f"saga:{order_id}:{step}:{product_id}"


def single_slot(store: EventStore, command: BillOrder, scope: str | None) -> bool:
    """Whether the one atomic append of ``command`` would touch one hash slot only."""
    if not store.clustered:
        return True  # the single-node path pays nothing for the cluster's check
    keys = store.keys
    order = order_aggregate(command.order_id or "")
    names = [
        keys.state(order),
        keys.state(account_aggregate(command.account_id)),
        *(keys.state(product_aggregate(line.product_id)) for line in command.lines),
    ]
    if scope is not None:
        names.append(keys.idem(scope, order))
    return store.slots(names) is None


async def bill(
    store: EventStore, command: BillOrder, meta: Metadata, *, idempotency_key: str | None = None
) -> AppendResult:
    """Bill ``command``: the single append where its keys share a slot, else the saga.

    The result is the billing receipt JSON (:func:`app.commands.billing.receipt_of`) in
    either case, on a first call and on a retry alike.
    """
    command = BILL_ORDER.prepare(command)
    if not isinstance(store.redis, RedisCluster):
        return await run(BILL_ORDER, store, command, meta, idempotency_key=idempotency_key)
    scope = idempotency_scope(command.account_id, idempotency_key) if idempotency_key else None
    if scope is not None:
        # The record, by a single append or by the saga's confirm, lives in the order's slot.
        command = msgspec.structs.replace(command, order_id=await claim(store, scope, command))
    if single_slot(store, command, scope):
        return await run(BILL_ORDER, store, command, meta, idempotency_key=idempotency_key)
    return await BillingSaga(store, meta).run(command, scope)


async def claim(store: EventStore, scope: str, command: BillOrder) -> str:
    """The order id of the saga under ``scope``: the one a first attempt claimed, or this
    command's own when it is the first."""
    key = store.keys.saga(scope)
    order_id = command.order_id or ""
    if await store.redis.set(key, order_id, nx=True, ex=IDEMPOTENCY_TTL):
        return order_id
    claimed = await store.redis.get(key)
    return claimed.decode() if claimed is not None else order_id


class BillingSaga:
    """The steps of one bill-now saga; each may be called again (a retry, the expiry
    worker, a test stopping midway) and is a no-op where it already happened."""

    def __init__(self, store: EventStore, meta: Metadata, ttl: int = SAGA_TTL_SECONDS) -> None:
        self.store = store
        self.meta = meta
        self.ttl = ttl

    async def order(self, order_id: str) -> OrderState:
        aggregate = order_aggregate(order_id)
        return state_of(await self.store.load([aggregate]), aggregate, OrderState)

    async def run(self, command: Any, scope: str | None) -> AppendResult:
        """Start (or find) the saga of ``command`` and drive it to billed or abandoned."""
        order_id = command.order_id or ""
        order = await self.order(order_id)
        if not order.exists:
            order = await self.start(command)
        elif not self.same_request(command, order_id, order):
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different order", field="Idempotency-Key"
            )
        if order.status == "reserving" and time.time() >= order.reserved_until:
            # A retry after the deadline undoes: the expiry worker may be releasing already.
            await self.abandon_and_release(order_id, order, "expired")
            order = await self.order(order_id)
        if order.status == "reserving":
            try:
                await self.reserve_all(order_id, order)
            except DomainError as exc:
                reason = (
                    "unknown_product" if isinstance(exc, UnknownProduct) else "insufficient_stock"
                )
                await self.abandon_and_release(order_id, order, reason)
                raise
            return await self.finish(order_id, scope)
        if order.status == "abandoned":
            raise BillingAbandoned(
                f"order {order_id} was abandoned ({order.abandoned}); nothing was billed",
                field="Idempotency-Key",
            )
        if order.reserved_until == 0:  # not a saga's order: another command made it
            raise OrderAlreadyExists(f"order {order_id} already exists", field="order_id")
        return await self.finish(order_id, scope)  # confirmed earlier: finish and answer

    def same_request(self, command: Any, order_id: str, order: OrderState) -> bool:
        """Whether a retry under the saga's key asks for the order the saga bills."""
        return fingerprint(_as_command(order_id, order)) == fingerprint(command)

    async def start(self, command: BillOrder) -> OrderState:
        """Step 2: decide as the single append would (on the states as read), then record
        the order's lines and deadline in its own slot."""
        order_id = command.order_id or ""
        aggregate = order_aggregate(order_id)
        products = dict.fromkeys(product_aggregate(line.product_id) for line in command.lines)
        states = await self.store.load(
            [aggregate, account_aggregate(command.account_id), *products]
        )
        order = state_of(states, aggregate, OrderState)
        _, billed = decide_bill_order(
            command,
            state_of(states, account_aggregate(command.account_id), AccountState),
            {
                line.product_id: state_of(states, product_aggregate(line.product_id), ProductState)
                for line in command.lines
            },
            order,
        )
        started = OrderBillingStarted(
            order_id=order_id,
            account_id=command.account_id,
            lines=billed.lines,
            total=billed.total,
            currency=billed.currency,
            reserved_until=int(time.time()) + self.ttl,
        )
        append = Append(
            events=[started], expect={aggregate: 0}, seen={aggregate: order}, meta=self.meta
        )
        try:
            await self.store.append(append)
        except VersionConflict:
            pass  # a concurrent retry started it first: go on with its saga
        return await self.order(order_id)

    async def reserve_all(self, order_id: str, order: OrderState) -> None:
        """Step 3, every product in line order; raises the domain error of the first
        product that cannot be reserved (the ones before it stay reserved)."""
        for i, (product_id, quantity) in enumerate(_wanted(order).items()):
            await self.reserve(order_id, product_id, quantity, order.reserved_until, i)

    async def reserve(
        self, order_id: str, product_id: str, quantity: int, until: int, line: int = 0
    ) -> None:
        aggregate = product_aggregate(product_id)
        event = StockReserved(
            product_id=product_id, order_id=order_id, quantity=quantity, reserved_until=until
        )
        try:
            await self.store.append(
                Append(
                    events=[event],
                    exists=[aggregate],
                    absent=[(aggregate, "deleted")],
                    seen={aggregate: COUNTERS_ONLY},
                    meta=self.meta,
                    idempotency_key=_step_key(order_id, "reserve", product_id),
                    idempotency_home=aggregate,
                )
            )
        except GuardFailed as exc:
            raise InsufficientStock(
                f"product {product_id} has {exc.actual} in stock, the order needs {quantity}",
                field=f"lines[{line}].quantity",
                product_id=product_id,
            ) from exc
        except AggregateMissing as exc:
            raise UnknownProduct(
                f"line {line}: product {product_id} is not in the catalog",
                field=f"lines[{line}].product_id",
                line=line,
                product_id=product_id,
            ) from exc

    async def reserved(self, order_id: str, product_id: str) -> bool:
        """Whether step 3 happened for ``product_id`` (its idempotency record exists)."""
        key = _step_key(order_id, "reserve", product_id)
        return await self.store.recorded(key, product_aggregate(product_id)) is not None

    async def confirm(self, order_id: str, scope: str | None) -> AppendResult | None:
        """Step 4: ``OrderBilled`` in the order's slot, only from ``reserving``; ``None``
        when the saga was abandoned meanwhile (the expiry worker won)."""
        aggregate = order_aggregate(order_id)
        for _ in range(3):
            order = await self.order(order_id)
            if order.status != "reserving":
                return None
            event, body = self.confirmation(order_id, order)
            try:
                result = await self.store.append(
                    Append(
                        events=[event],
                        expect={aggregate: order.v},
                        seen={aggregate: order},
                        meta=self.meta,
                        idempotency_key=scope,
                        idempotency_home=aggregate,
                        result=body,
                    )
                )
            except VersionConflict:
                continue
            return result if result.duplicate else dataclasses.replace(result, result=body)
        raise ConcurrentModification(f"order {order_id} kept changing while billing")

    def confirmation(self, order_id: str, order: OrderState) -> tuple[Event, str]:
        """The confirm's event and the answer it records: the billing receipt."""
        event = OrderBilled(
            order_id=order_id,
            account_id=order.account_id,
            lines=list(order.lines),
            total=order.total,
            currency=order.currency,
            reserved=True,
        )
        request = fingerprint(_as_command(order_id, order))
        return event, msgspec.json.encode({"request": request, "receipt": event}).decode()

    async def after_confirm(self, order_id: str, order: OrderState) -> None:
        """Step 5 of a bill-now order: take every reservation."""
        await self.take_all(order_id, order)

    async def finish(self, order_id: str, scope: str | None) -> AppendResult:
        """Steps 4 and 5: confirm (or find it confirmed), take every reservation, answer."""
        result = await self.confirm(order_id, scope)
        order = await self.order(order_id)
        if order.status in UNBILLED:
            await self.release_all(order_id, order)
            raise BillingAbandoned(
                f"order {order_id} was abandoned ({order.abandoned}); nothing was billed",
                field="Idempotency-Key",
            )
        await self.after_confirm(order_id, order)
        if result is None:
            result = await self._recorded(order_id, order, scope)
        return result

    async def _recorded(self, order_id: str, order: OrderState, scope: str | None) -> AppendResult:
        """The answer of an order confirmed earlier (by another attempt of this key)."""
        if scope is not None:
            recorded = await self.store.recorded(scope, order_aggregate(order_id))
            if recorded is not None:
                return recorded
        _, body = self.confirmation(order_id, order)
        return AppendResult(entry_ids=[], result=body)

    async def take_all(self, order_id: str, order: OrderState) -> None:
        """Step 5, every product: their reserved units leave for good."""
        for product_id, quantity in _wanted(order).items():
            await self._counter_step(
                StockTaken(product_id=product_id, order_id=order_id, quantity=quantity), "take"
            )

    async def abandon(self, order_id: str, reason: str, product_id: str = "") -> OrderState:
        """Abandon the saga in the order's slot unless it was billed; returns the order's
        state after (``billed`` when confirm won)."""
        aggregate = order_aggregate(order_id)
        for _ in range(3):
            order = await self.order(order_id)
            if order.status != "reserving":
                return order
            event = OrderBillingAbandoned(order_id=order_id, reason=reason, product_id=product_id)
            try:
                await self.store.append(
                    Append(
                        events=[event],
                        expect={aggregate: order.v},
                        seen={aggregate: order},
                        meta=self.meta,
                    )
                )
            except VersionConflict:
                continue
            log.info("billing_saga_abandoned", order_id=order_id, reason=reason)
        return await self.order(order_id)

    async def abandon_and_release(
        self, order_id: str, order: OrderState, reason: str = "insufficient_stock"
    ) -> None:
        """Step 6 after a refused reservation (or a retry past the deadline): abandon, then
        release what is held; if another attempt confirmed first, take instead."""
        after = await self.abandon(order_id, reason)
        if after.status in UNBILLED:
            await self.release_all(order_id, order)
        else:
            await self.take_all(order_id, after)

    async def release_all(self, order_id: str, order: OrderState) -> None:
        for product_id, quantity in _wanted(order).items():
            await self.release(order_id, product_id, quantity)

    async def release(self, order_id: str, product_id: str, quantity: int) -> None:
        """Step 6 for one product: only a reservation that exists is released, once."""
        if await self.reserved(order_id, product_id):
            await self._counter_step(
                StockReleased(product_id=product_id, order_id=order_id, quantity=quantity),
                "release",
            )

    async def _counter_step(self, event: StockTaken | StockReleased, step: str) -> None:
        aggregate = product_aggregate(event.product_id)
        await self.store.append(
            Append(
                events=[event],
                seen={aggregate: COUNTERS_ONLY},
                meta=self.meta,
                idempotency_key=_step_key(event.order_id, step, event.product_id),
                idempotency_home=aggregate,
            )
        )

    async def settle(self, order_id: str, product_id: str, quantity: int, now: int) -> str:
        """What the expiry worker does with a ``StockReserved`` past its deadline: take it
        when its order was billed, release it when abandoned (abandoning a saga still
        ``reserving`` first). Returns what it did: ``taken``, ``released`` or ``waiting``."""
        order = await self.order(order_id)
        if order.status == "reserving":
            if now < order.reserved_until:
                return "waiting"
            order = await self.abandon(order_id, "expired")
        if order.placing and order.status not in UNBILLED:
            # A checkout's order: its payment, expiry or cancellation moves these units.
            return "waiting" if order.status == "awaiting_payment" else "placed"
        if order.status in UNBILLED:
            await self.release(order_id, product_id, quantity)
            return "released"
        # Billed, whatever happened since (a cancellation returns the stock on its own).
        await self._counter_step(
            StockTaken(product_id=product_id, order_id=order_id, quantity=quantity), "take"
        )
        return "taken"


def _as_command(order_id: str, order: OrderState) -> BillOrder:
    return BillOrder(
        account_id=order.account_id,
        order_id=order_id,
        lines=[BillLine(product_id=ln.product_id, quantity=ln.quantity) for ln in order.lines],
    )
