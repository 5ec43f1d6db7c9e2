"""Order lifecycle after billing: cancel a billed order, returning its lines to stock."""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.commands.base import Command, result_json
from app.commands.billing import order_aggregate
from app.commands.errors import OrderNotCancellable, OrderNotFound
from app.commands.runner import Decider, state_of
from events.states import OrderState
from events.store import Append
from events.types import OrderCancelled

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class CancelOrder(Command, frozen=True, kw_only=True):
    """Cancel a billed order on behalf of ``account_id`` (its owner)."""

    order_id: Id
    account_id: Id
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


def decide_cancel_order(cmd: CancelOrder, order: OrderState) -> Append:
    """Only the owner's billed order; the stock comes back through ``evolve`` (a counter
    increase needs no guard and no product version)."""
    if not order.exists or order.account_id != cmd.account_id:
        raise OrderNotFound(f"order {cmd.order_id} does not exist", field="order_id")
    if order.status != "billed":
        raise OrderNotCancellable(f"order {cmd.order_id} is {order.status}", field="order_id")
    aggregate = order_aggregate(cmd.order_id)
    event = OrderCancelled(
        order_id=cmd.order_id,
        account_id=order.account_id,
        lines=list(order.lines),
        reason=cmd.reason,
    )
    return Append(
        events=[event],
        expect={aggregate: order.v},
        seen={aggregate: order},
        result=result_json({"order_id": cmd.order_id}),
    )


CANCEL_ORDER: Decider[CancelOrder] = Decider(
    reads=lambda c: [order_aggregate(c.order_id)],
    decide=lambda c, s: decide_cancel_order(
        c, state_of(s, order_aggregate(c.order_id), OrderState)
    ),
)
"""Result JSON: ``{"order_id": ...}``."""
