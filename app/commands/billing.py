"""Billing: turn order lines into an ``OrderBilled``, pricing from the catalog state and
taking stock atomically.

Concurrency: the append expects each product's version as read (so a price change or a
deletion in between forces a re-decision) and guards ``stock >= quantity`` while
decrementing it as a counter. Orders do not bump a product's version, so concurrent orders
on one product never conflict; the guard alone keeps stock from going below zero.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from app.commands.accounts import account_aggregate
from app.commands.base import Command, compared_by, result_json, validated
from app.commands.catalog import ProductId, product_aggregate
from app.commands.errors import (
    AccountNotFound,
    InsufficientStock,
    MixedCurrencies,
    OrderAlreadyExists,
    UnknownProduct,
)
from app.commands.runner import Decider, state_of
from events.ids import uuid7
from events.states import AccountState, AggregateState, OrderState, ProductState
from events.store import Append, AppendResult
from events.types import OrderBilled, OrderLine

Quantity = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class BillLine(msgspec.Struct, frozen=True, kw_only=True):
    product_id: ProductId
    quantity: Quantity


class BillOrder(Command, frozen=True, kw_only=True):
    account_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    lines: Annotated[list[BillLine], msgspec.Meta(min_length=1, max_length=100)]
    order_id: str | None = None


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """What billing answers, as ``POST /orders`` returns it, on a first append and on an
    idempotent replay alike: the ``OrderBilled`` without its account, and the append's
    ``position``. It is the order's only shape between the event and the HTTP answer."""

    order_id: str
    lines: list[OrderLine]
    total: int
    currency: str
    position: str


class _Stored(msgspec.Struct, frozen=True):
    """The idempotency record: the request's fingerprint and the event it appended (records
    written before the event was stored hold the receipt's fields; both read alike)."""

    request: str
    receipt: dict[str, Any]


def order_aggregate(order_id: str) -> str:
    return f"order:{order_id}"


def fingerprint(cmd: BillOrder) -> str:
    """Identifies the request behind an idempotency key, to refuse reusing it for another."""
    body = msgspec.json.encode([cmd.account_id, [(ln.product_id, ln.quantity) for ln in cmd.lines]])
    return hashlib.sha256(body).hexdigest()[:32]


def decide_bill_order(
    cmd: BillOrder,
    account: AccountState,
    products: dict[str, ProductState],
    order: OrderState | None = None,
) -> tuple[Append, OrderBilled]:
    """``products`` maps product id → its decision state (the initial state when unknown);
    ``order`` is the order's (new) state. Returns the append and its ``OrderBilled``."""
    if cmd.order_id is None:
        raise ValueError("order_id must be assigned before deciding")
    order = order or OrderState()
    if order.exists:
        raise OrderAlreadyExists(f"order {cmd.order_id} already exists", field="order_id")
    if not account.exists or account.forgotten:
        raise AccountNotFound(f"account {cmd.account_id} does not exist", field="account_id")
    wanted: dict[str, int] = {}
    first_line: dict[str, int] = {}
    lines: list[OrderLine] = []
    currencies: set[str] = set()
    for i, line in enumerate(cmd.lines):
        state = products.get(line.product_id, ProductState())
        if not state.live:
            raise UnknownProduct(
                f"line {i}: product {line.product_id} is not in the catalog",
                field=f"lines[{i}].product_id",
                line=i,
                product_id=line.product_id,
            )
        wanted[line.product_id] = wanted.get(line.product_id, 0) + line.quantity
        first_line.setdefault(line.product_id, i)
        currencies.add(state.currency)
        lines.append(
            OrderLine(
                product_id=line.product_id,
                name=state.name,
                quantity=line.quantity,
                unit_price=state.price,
                line_total=state.price * line.quantity,
            )
        )
    for product_id, quantity in wanted.items():
        stock = products[product_id].stock
        if stock < quantity:
            i = first_line[product_id]
            raise InsufficientStock(
                f"product {product_id} has {stock} in stock, the order needs {quantity}",
                field=f"lines[{i}].quantity",
                product_id=product_id,
            )
    if len(currencies) > 1:
        raise MixedCurrencies(
            f"an order is billed in one currency; these products use {sorted(currencies)}",
            field="lines",
        )
    currency = currencies.pop()
    total = sum(line.line_total for line in lines)
    event = OrderBilled(
        order_id=cmd.order_id,
        account_id=cmd.account_id,
        lines=lines,
        total=total,
        currency=currency,
    )
    expect = {order_aggregate(cmd.order_id): 0}
    seen: dict[str, AggregateState] = {order_aggregate(cmd.order_id): order}
    for product_id in wanted:
        expect[product_aggregate(product_id)] = products[product_id].v
        seen[product_aggregate(product_id)] = products[product_id]
    append = Append(
        events=[event],
        expect=expect,
        exists=[account_aggregate(cmd.account_id)],
        seen=seen,
        result=result_json({"request": fingerprint(cmd), "receipt": event}),
    )
    return append, event


def receipt_of(result: AppendResult) -> Receipt:
    """The receipt of a billing append (first append and replays alike): the stored order,
    at the position of the append (a replay's is the first append's)."""
    stored = msgspec.json.decode(result.result, type=_Stored)
    return msgspec.convert({**stored.receipt, "position": result.position}, Receipt)


def idempotency_scope(account_id: str, key: str) -> str:
    """Keys are per account: two customers may pick the same key."""
    return f"order:{account_id}:{key}"


def _with_order_id(command: BillOrder) -> BillOrder:
    return validated(msgspec.structs.replace(command, order_id=command.order_id or uuid7()))


def _reads(command: BillOrder) -> list[str]:
    products = dict.fromkeys(product_aggregate(line.product_id) for line in command.lines)
    return [
        order_aggregate(command.order_id or ""),
        account_aggregate(command.account_id),
        *products,
    ]


def _decide(command: BillOrder, states: Mapping[str, AggregateState]) -> Append:
    products = {
        line.product_id: state_of(states, product_aggregate(line.product_id), ProductState)
        for line in command.lines
    }
    append, _ = decide_bill_order(
        command,
        state_of(states, account_aggregate(command.account_id), AccountState),
        products,
        state_of(states, order_aggregate(command.order_id or ""), OrderState),
    )
    return append


BILL_ORDER: Decider[BillOrder] = Decider(
    reads=_reads,
    decide=_decide,
    prepare=_with_order_id,
    scope=lambda c, key: idempotency_scope(c.account_id, key),
    replayed=compared_by(fingerprint),
)
"""Result JSON holds the billed order (read it as a :class:`Receipt` with :func:`receipt_of`). A repeated idempotency
key returns the first append's result before anything is decided, so a retry after success
gets the same answer even if stock ran out since; reused for another order it is refused."""
