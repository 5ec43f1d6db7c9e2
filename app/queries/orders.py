"""``GET /orders`` (the caller's, newest first, keyset pages) and ``GET /orders/{id}``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter, QueryParameter

from app.auth import Principal
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.cursors import after, decode_cursor, encode_cursor
from app.queries.read_side import read_side, store_errors
from events.types import OrderLine
from projections.read_models import OrderView

SORT = "-billed_at"


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    at: datetime


class Payment(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    status: str
    """``declined`` or ``captured``."""
    at: datetime
    amount: int | None = None
    payment_id: str | None = None
    provider: str | None = None
    reason: str | None = None


class Refund(msgspec.Struct, frozen=True, kw_only=True):
    refund_id: str
    amount: int
    reason: str
    at: datetime


class Shipment(msgspec.Struct, frozen=True, kw_only=True):
    shipment_id: str
    carrier: str
    tracking_code: str
    at: datetime


class Order(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    account_id: str
    lines: list[OrderLine]
    """The lines as billed or checked out: the event's own ``OrderLine``."""
    total: int
    currency: str
    billed_at: datetime
    """When the order was billed (bill-now) or checked out."""
    status: str
    history: list[StatusChange]
    payments: list[Payment]
    refunds: list[Refund]
    shipments: list[Shipment]
    reserved_until: datetime | None = None


def _in_order(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A document's ``s<seq>``-keyed map as a list in stream order."""
    return [entries[k] for k in sorted(entries, key=lambda k: int(k[1:]))]


class OrderPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Order]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; ``null`` on the last page."""


def order_of(doc: OrderView) -> Order:
    history = [StatusChange(**h) for h in _in_order(doc.history)]
    if "s1" not in doc.history:  # billed now: placed and paid by its first event
        history.insert(0, StatusChange(status="paid", at=doc.billed_at))
    return Order(
        id=doc.id,
        account_id=doc.account_id,
        lines=[OrderLine(**line.model_dump()) for line in doc.lines],
        total=doc.total,
        currency=doc.currency,
        billed_at=doc.billed_at,
        status=doc.status,
        history=history,
        payments=[Payment(**p) for p in _in_order(doc.payments)],
        refunds=[Refund(**r) for r in _in_order(doc.refunds)],
        shipments=[Shipment(**x) for x in _in_order(doc.shipments)],
        reserved_until=doc.reserved_until,
    )


@get("/orders", tags=["orders"], operation_id="listMyOrders", responses=problem_responses(400, 401))
async def list_orders(
    request: Request[Principal, Any, Any],
    state: State,
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, QueryParameter(max_length=1000)] = None,
    min_position: MinPosition = None,
) -> Response[OrderPage]:
    """The caller's orders, newest first."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    query: dict[str, Any] = {"account_id": request.user.account_id}
    if cursor:
        query = {"$and": [query, after("billed_at", True, decode_cursor(cursor, SORT))]}
    with store_errors():
        docs = (
            await OrderView.find(query)
            .sort([("billed_at", -1), ("_id", -1)])
            .limit(limit + 1)
            .to_list()
        )
    more = len(docs) > limit
    docs = docs[:limit]
    next_cursor = encode_cursor(SORT, docs[-1].billed_at, docs[-1].id) if more else None
    return view_response(
        OrderPage(items=[order_of(d) for d in docs], next_cursor=next_cursor), view
    )


@get(
    "/orders/{order_id:str}",
    tags=["orders"],
    operation_id="getOrder",
    responses=problem_responses(400, 401, 404),
)
async def get_order(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: Annotated[str, PathParameter(max_length=100)],
    min_position: MinPosition = None,
) -> Response[Order]:
    """One order: the caller's own, or any for an admin. Anyone else's is a 404."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    with store_errors():
        doc = await OrderView.get(order_id)
    user = request.user
    if doc is None or (doc.account_id != user.account_id and user.role != "admin"):
        raise NotFoundException("no such order")
    return view_response(order_of(doc), view)
