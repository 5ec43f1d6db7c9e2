"""Read-model handlers of the order lifecycle: the order document's status, history,
payments, refunds and shipments, and the products' ``stock`` / ``reserved``.

Same rules as :mod:`projections.read_models.handlers`: an event writes its own order
document guarded by ``Own(seq)``, and its products (other partitions) by ``Cross``
watermarks with commuting ``$inc``. Each entry of the order's maps is keyed ``s<seq>``,
so replays set the same entry again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from events.codec import RecordedEvent
from events.types import (
    OrderCancelled,
    OrderDelivered,
    OrderExpired,
    OrderLine,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    PaymentDeclined,
    RefundIssued,
)
from projections.read_models.folding import Cross, Own, Write, mark


def _units(lines: Iterable[OrderLine]) -> dict[str, int]:
    units: dict[str, int] = defaultdict(int)
    for line in lines:
        units[line.product_id] += line.quantity
    return units


def _products(
    rec: RecordedEvent, lines: Iterable[OrderLine], stock: int, reserved: int
) -> list[Write]:
    """``$inc`` each product's stock / reserved by ``stock`` / ``reserved`` per unit."""
    writes = []
    for product_id, quantity in _units(lines).items():
        inc = {k: v * quantity for k, v in (("stock", stock), ("reserved", reserved)) if v}
        guard = Cross(rec.partition, mark(rec.entry_id))
        writes.append(Write("products", product_id, {"$inc": inc}, guard, upsert=True))
    return writes


def _step(
    rec: RecordedEvent, order_id: str, status: str | None, **entries: dict[str, Any]
) -> Write:
    """The order document's change: a new status (and history entry) and map entries."""
    fields: dict[str, Any] = {}
    if status is not None:
        fields["status"] = status
        fields[f"history.s{rec.seq}"] = {"status": status, "at": rec.at}
    for name, entry in entries.items():
        fields[f"{name}.s{rec.seq}"] = entry
    return Write("orders", order_id, {"$set": fields}, Own(rec.seq))


def on_order_placed(rec: RecordedEvent, e: OrderPlaced) -> list[Write]:
    doc = {
        "account_id": e.account_id,
        "lines": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "line_total": line.line_total,
            }
            for line in e.lines
        ],
        "total": e.total,
        "currency": e.currency,
        "billed_at": rec.at,
        "status": "awaiting_payment",
        "history": {f"s{rec.seq}": {"status": "awaiting_payment", "at": rec.at}},
        "payments": {},
        "refunds": {},
        "shipments": {},
        "reserved_until": datetime.fromtimestamp(e.reserved_until, UTC),
    }
    order = Write("orders", e.order_id, {"$set": doc}, Own(rec.seq), upsert=True, sole_writer=True)
    return [order, *_products(rec, e.lines, stock=-1, reserved=1)]


def on_payment_declined(rec: RecordedEvent, e: PaymentDeclined) -> list[Write]:
    payment = {"attempt": e.attempt, "status": "declined", "reason": e.reason, "at": rec.at}
    return [_step(rec, e.order_id, None, payments=payment)]


def on_order_paid(rec: RecordedEvent, e: OrderPaid) -> list[Write]:
    payment = {
        "attempt": e.attempt,
        "status": "captured",
        "payment_id": e.payment_id,
        "provider": e.provider,
        "amount": e.amount,
        "at": rec.at,
    }
    writes = [_step(rec, e.order_id, "paid", payments=payment)]
    writes.extend(_products(rec, e.lines, stock=0, reserved=-1))
    if e.account_id:
        account = {"$inc": {"orders_count": 1, "total_spent": e.amount}}
        guard = Cross(rec.partition, mark(rec.entry_id))
        writes.append(Write("accounts", e.account_id, account, guard, upsert=True))
    return writes


def on_order_expired(rec: RecordedEvent, e: OrderExpired) -> list[Write]:
    return [_step(rec, e.order_id, "expired"), *_products(rec, e.lines, stock=1, reserved=-1)]


def on_order_cancelled(rec: RecordedEvent, e: OrderCancelled) -> list[Write]:
    entries: dict[str, dict[str, Any]] = {}
    if e.refunded:
        entries["refunds"] = {
            "refund_id": f"{e.order_id}:cancel",
            "amount": e.refunded,
            "reason": e.reason or "cancelled",
            "at": rec.at,
        }
    step = _step(rec, e.order_id, "cancelled", **entries)
    return [step, *_products(rec, e.lines, stock=1, reserved=-1 if e.reserved else 0)]


def on_refund_issued(rec: RecordedEvent, e: RefundIssued) -> list[Write]:
    refund = {"refund_id": e.refund_id, "amount": e.amount, "reason": e.reason, "at": rec.at}
    status = "refunded" if e.full else "partially_refunded"
    return [_step(rec, e.order_id, status, refunds=refund)]


def on_order_shipped(rec: RecordedEvent, e: OrderShipped) -> list[Write]:
    shipment = {
        "shipment_id": e.shipment_id,
        "carrier": e.carrier,
        "tracking_code": e.tracking_code,
        "at": rec.at,
    }
    return [_step(rec, e.order_id, "shipped", shipments=shipment)]


def on_order_delivered(rec: RecordedEvent, e: OrderDelivered) -> list[Write]:
    return [_step(rec, e.order_id, "delivered")]
