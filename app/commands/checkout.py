"""Checkout: the cart becomes an order awaiting payment, every line's stock reserved until a
deadline, in one atomic append (``OrderPlaced`` + ``CartCheckedOut``).

Partitions: the order's, the cart's, the account's (must exist) and each product's (their
``stock``/``reserved`` counters, guarded ``stock >= quantity``; their versions are expected
so a price change in between forces a re-decision). It is the widest lifecycle step, as
billing already is; payment, expiry and cancellation reach the products' partitions too,
but only through counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Annotated

import msgspec

from app.commands.accounts import account_aggregate
from app.commands.base import (
    Command,
    Position,
    checked_replay,
    request_fingerprint,
    result_json,
    validated,
)
from app.commands.billing import BillLine, order_aggregate
from app.commands.cart import cart_aggregate
from app.commands.catalog import product_aggregate
from app.commands.errors import (
    AccountNotFound,
    ConcurrentModification,
    EmptyCart,
    InsufficientStock,
    MixedCurrencies,
    OrderAlreadyExists,
    UnknownProduct,
)
from app.commands.runner import Decider, state_of
from events.ids import uuid7
from events.states import AccountState, AggregateState, CartState, OrderState, ProductState
from events.store import Append, AppendResult
from events.types import CartCheckedOut, OrderLine, OrderPlaced

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class CartChanged(ConcurrentModification):
    """The cart changed between reading it and deciding; :func:`checkout_command` retries."""


class Checkout(Command, frozen=True, kw_only=True):
    """Check out ``account_id``'s cart. ``lines`` is the cart as the caller read it (the
    decision refuses if the cart has changed since); ``reserved_until`` is fixed once, by
    ``prepare``, so a retried decision keeps the same deadline."""

    account_id: Id
    lines: list[BillLine]
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] = 900
    order_id: str | None = None
    reserved_until: int = 0


class Placed(msgspec.Struct, frozen=True, kw_only=True):
    """What checkout answers, as ``POST /checkout`` returns it, on a first append and on an
    idempotent replay alike. The result JSON stores the ``OrderPlaced`` and its status;
    :func:`placed_of` reads it at the append's position."""

    order_id: str
    status: str
    total: int
    currency: str
    reserved_until: int
    """Epoch seconds: the order expires, and its stock returns, unless paid by then."""
    position: Position


def checkout_request(lines: Iterable[BillLine | OrderLine]) -> str:
    """The fingerprint of a checkout (:func:`~app.commands.base.request_fingerprint`): the
    lines it checks out, product and quantity in cart order. ``POST /checkout`` has no
    body: its account is in the key's scope, and the cart it checks out is what can differ
    between two requests under one key. Left out: the order id and the deadline, drawn
    again by each attempt, and the reservation's length, a server setting."""
    return request_fingerprint([(line.product_id, line.quantity) for line in lines])


def decide_checkout(
    cmd: Checkout,
    cart: CartState,
    account: AccountState,
    products: Mapping[str, ProductState],
    order: OrderState,
) -> Append:
    if cmd.order_id is None:
        raise ValueError("order_id must be assigned before deciding")
    if [(i.product_id, i.quantity) for i in cart.items] != [
        (ln.product_id, ln.quantity) for ln in cmd.lines
    ]:
        raise CartChanged("the cart changed while checking out; try again")
    if not cart.items:
        raise EmptyCart("the cart is empty", field="cart")
    if order.exists:
        raise OrderAlreadyExists(f"order {cmd.order_id} already exists", field="order_id")
    if not account.exists or account.forgotten:
        raise AccountNotFound(f"account {cmd.account_id} does not exist", field="account_id")
    lines: list[OrderLine] = []
    for i, item in enumerate(cart.items):
        product = products[item.product_id]
        if not product.live:
            raise UnknownProduct(
                f"line {i}: product {item.product_id} is no longer in the catalog",
                field=f"lines[{i}].product_id",
                line=i,
                product_id=item.product_id,
            )
        if product.stock < item.quantity:
            raise InsufficientStock(
                f"line {i}: product {item.product_id} has {product.stock} in stock, "
                f"the cart needs {item.quantity}",
                field=f"lines[{i}].quantity",
                line=i,
                product_id=item.product_id,
            )
        lines.append(
            OrderLine(
                product_id=item.product_id,
                name=product.name,
                quantity=item.quantity,
                unit_price=product.price,
                line_total=product.price * item.quantity,
            )
        )
    currencies = {products[i.product_id].currency for i in cart.items}
    if len(currencies) > 1:
        raise MixedCurrencies(
            f"an order is paid in one currency; these products use {sorted(currencies)}",
            field="lines",
        )
    currency = currencies.pop()
    total = sum(line.line_total for line in lines)
    placed = OrderPlaced(
        order_id=cmd.order_id,
        account_id=cmd.account_id,
        lines=lines,
        total=total,
        currency=currency,
        reserved_until=cmd.reserved_until,
    )
    order_key, cart_key = order_aggregate(cmd.order_id), cart_aggregate(cmd.account_id)
    expect = {order_key: 0, cart_key: cart.v}
    seen: dict[str, AggregateState] = {order_key: order, cart_key: cart}
    for item in cart.items:
        expect[product_aggregate(item.product_id)] = products[item.product_id].v
        seen[product_aggregate(item.product_id)] = products[item.product_id]
    return Append(
        events=[placed, CartCheckedOut(account_id=cmd.account_id, order_id=cmd.order_id)],
        expect=expect,
        exists=[account_aggregate(cmd.account_id)],
        seen=seen,
        result=result_json(
            {
                **msgspec.to_builtins(placed),
                "status": "awaiting_payment",
                "request": checkout_request(cmd.lines),
            }
        ),
    )


def _prepare(cmd: Checkout) -> Checkout:
    return validated(
        msgspec.structs.replace(
            cmd,
            order_id=cmd.order_id or uuid7(),
            reserved_until=cmd.reserved_until or int(time.time()) + cmd.ttl_seconds,
        )
    )


def _reads(cmd: Checkout) -> list[str]:
    return [
        cart_aggregate(cmd.account_id),
        account_aggregate(cmd.account_id),
        order_aggregate(cmd.order_id or ""),
        *dict.fromkeys(product_aggregate(ln.product_id) for ln in cmd.lines),
    ]


def _decide(cmd: Checkout, states: Mapping[str, AggregateState]) -> Append:
    return decide_checkout(
        cmd,
        state_of(states, cart_aggregate(cmd.account_id), CartState),
        state_of(states, account_aggregate(cmd.account_id), AccountState),
        {
            ln.product_id: state_of(states, product_aggregate(ln.product_id), ProductState)
            for ln in cmd.lines
        },
        state_of(states, order_aggregate(cmd.order_id or ""), OrderState),
    )


def _replayed(cmd: Checkout, replay: AppendResult) -> AppendResult:
    """A retry that finds the cart empty gets the first answer: the first attempt emptied
    it, and an empty cart is never checked out on its own (``empty-cart``). One that finds
    items is compared with the record's fingerprint."""
    return checked_replay(replay, checkout_request(cmd.lines)) if cmd.lines else replay


CHECKOUT: Decider[Checkout] = Decider(
    reads=_reads,
    decide=_decide,
    prepare=_prepare,
    scope=lambda c, key: f"checkout:{c.account_id}:{key}",
    replayed=_replayed,
)
"""Result JSON: the ``OrderPlaced``, its status and the request's fingerprint
(``request``: :func:`checkout_request`); read it with :func:`placed_of`. A key reused for
the checkout of other lines is refused (``idempotency-key-reused``)."""


def placed_of(result: AppendResult) -> Placed:
    """The answer of a checkout append (first append and replays alike), at its position."""
    return msgspec.convert(
        {**msgspec.json.decode(result.result), "position": result.position}, Placed
    )
