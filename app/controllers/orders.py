"""Billing: ``POST /orders`` for the signed-in customer."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import HeaderParameter, JSONBody

from app.auth import Principal
from app.commands import execute
from app.commands.billing import BillLine, BillOrder, Quantity, Receipt, receipt_of
from app.commands.catalog import ProductId
from app.controllers.schemas import Body
from app.problems import problem_responses
from app.services import command_meta, services

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Repeat it on a retry: the first response is returned and the request takes "
            "effect once. Reused for a different request: 422."
        ),
        required=False,
    ),
]


class LineBody(Body, frozen=True, kw_only=True):
    product_id: ProductId
    quantity: Quantity


class BillBody(Body, frozen=True, kw_only=True):
    lines: Annotated[list[LineBody], msgspec.Meta(min_length=1, max_length=100)]


async def bill(
    request: Request[Principal, Any, Any],
    state: State,
    lines: list[BillLine],
    idempotency_key: str | None,
) -> Receipt:
    """Shared by ``/orders`` and the legacy ``/faturarPedido``."""
    account_id = request.user.account_id
    command = BillOrder(account_id=account_id, lines=lines)
    meta = command_meta(request, f"account:{account_id}")
    result = await execute(services(state).store, command, meta, idempotency_key=idempotency_key)
    return receipt_of(result)


@post(
    "/orders",
    tags=["orders"],
    operation_id="billOrder",
    status_code=201,
    responses=problem_responses(400, 401, 409, 413, 422),
)
async def bill_order(
    request: Request[Principal, Any, Any],
    state: State,
    data: JSONBody[BillBody],
    idempotency_key: IdempotencyKey = None,
) -> Receipt:
    """Bill 1-100 lines (quantity 1-1000) at catalog prices; the total is computed here.

    Unknown or deleted product: 422 naming the line. Not enough stock: 409 naming the product.
    """
    lines = [BillLine(product_id=ln.product_id, quantity=ln.quantity) for ln in data.lines]
    return await bill(request, state, lines, idempotency_key)
