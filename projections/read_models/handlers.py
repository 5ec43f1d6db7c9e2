"""The read models' event handlers: one function per event type, event in, guarded writes out.

Pure: no MongoDB. :func:`writes_for` is the route table (event type → handler); the
writes it returns carry their own guards (``Own`` version, ``Cross`` watermark; see
:mod:`projections.read_models.folding`), and :mod:`projections.read_models.projection`
folds and applies them in bulk. Order lifecycle and cart handlers live in
:mod:`~projections.read_models.lifecycle` and :mod:`~projections.read_models.carts`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from events.codec import RecordedEvent
from events.personal import CLEAR, Opener
from events.types import (
    AccountCreated,
    AccountDeactivated,
    AccountProfileChanged,
    AccountReactivated,
    CartCheckedOut,
    CartItemRemoved,
    CartItemSet,
    CategoryCreated,
    CategoryDeleted,
    CategoryRenamed,
    CustomerForgotten,
    LoginSucceeded,
    OrderBilled,
    OrderCancelled,
    OrderDelivered,
    OrderExpired,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    PasswordChanged,
    PaymentDeclined,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    RefundIssued,
    StockAdjusted,
)
from projections.read_models.carts import (
    on_cart_checked_out,
    on_cart_item_removed,
    on_cart_item_set,
)
from projections.read_models.folding import Cross, Own, Update, Write, mark
from projections.read_models.lifecycle import (
    on_order_cancelled,
    on_order_delivered,
    on_order_expired,
    on_order_paid,
    on_order_placed,
    on_order_shipped,
    on_payment_declined,
    on_refund_issued,
)


def _own(role: str, aggregate_id: str, seq: int, update: Update, *, upsert: bool = False) -> Write:
    return Write(role, aggregate_id, update, Own(seq), upsert=upsert)


def _cross(role: str, target_id: str, rec: RecordedEvent, update: Update) -> Write:
    return Write(role, target_id, update, Cross(rec.partition, mark(rec.entry_id)), upsert=True)


def on_account_created(rec: RecordedEvent, e: AccountCreated, opener: Opener) -> list[Write]:
    """Email and name opened with the account's key; a destroyed key leaves them empty (a
    rebuild after forgetting), and ``CustomerForgotten`` follows in the log anyway."""
    email = opener.open(e.account_id, "email", e.email) or ""
    name = opener.open(e.account_id, "name", e.name) or ""
    fields = {
        "email": email,
        "name": name,
        "name_key": name.casefold(),
        "role": e.role,
        "active": True,
        "created_at": rec.at,
    }
    # Set, not set on insert: a stub made by an order or a login may come first.
    update = {"$set": fields, "$setOnInsert": {"orders_count": 0, "total_spent": 0}}
    return [_own("accounts", e.account_id, rec.seq, update, upsert=True)]


def on_login_succeeded(rec: RecordedEvent, e: LoginSucceeded) -> list[Write]:
    # A stub carries the counters AccountCreated would set on insert, so the document is
    # the same whichever partition a replay applies first.
    stub = {"version": 0, "orders_count": 0, "total_spent": 0}
    update = {"$max": {"last_login_at": rec.at}, "$setOnInsert": stub}
    return [Write("accounts", e.account_id, update, upsert=True)]


# -- accounts: profile and activation (issue 15) --


def on_account_profile_changed(
    rec: RecordedEvent, e: AccountProfileChanged, opener: Opener
) -> list[Write]:
    fields: dict[str, Any] = {}
    if e.name is not None:
        name = opener.open(e.account_id, "name", e.name) or ""
        fields["name"] = name
        fields["name_key"] = name.casefold()
    if e.shipping_address is not None:
        address = opener.open(e.account_id, "shipping_address", e.shipping_address)
        fields["shipping_address"] = None if address is None else msgspec.json.decode(address)
    return [_own("accounts", e.account_id, rec.seq, {"$set": fields})]


def on_customer_forgotten(rec: RecordedEvent, e: CustomerForgotten) -> list[Write]:
    """Scrub what was opened; the counters (orders, total spent) stay."""
    fields = {
        "email": "",
        "name": "",
        "name_key": "",
        "shipping_address": None,
        "active": False,
        "forgotten": True,
    }
    return [_own("accounts", e.account_id, rec.seq, {"$set": fields})]


PERSONAL_EVENTS = (AccountCreated, AccountProfileChanged)
"""The events whose fields are sealed (:mod:`events.personal`)."""


def on_account_activation(
    rec: RecordedEvent, e: AccountDeactivated | AccountReactivated
) -> list[Write]:
    active = isinstance(e, AccountReactivated)
    return [_own("accounts", e.account_id, rec.seq, {"$set": {"active": active}})]


def on_password_changed(rec: RecordedEvent, e: PasswordChanged) -> list[Write]:
    """Only the version moves: the hash never enters a view."""
    return [_own("accounts", e.account_id, rec.seq, {})]


def on_product_created(rec: RecordedEvent, e: ProductCreated) -> list[Write]:
    fields = {
        "sku": e.sku,
        "name": e.name,
        "name_key": e.name.casefold(),
        "description": e.description,
        "category": e.category,
        "price": e.price,
        "currency": e.currency,
        "deleted": False,
        "created_at": rec.at,
        "updated_at": rec.at,
    }
    if e.seller_id is not None:
        fields["seller_id"] = e.seller_id
    # Opening stock is added, not set: sales from other partitions may already be counted.
    update = {"$set": fields, "$inc": {"stock": e.stock}}
    return [_own("products", e.product_id, rec.seq, update, upsert=True)]


def on_product_updated(rec: RecordedEvent, e: ProductUpdated) -> list[Write]:
    fields: dict[str, Any] = {"updated_at": rec.at}
    for name in ("name", "description", "category", "price", "currency"):
        value = getattr(e, name)
        if value is not None:
            fields[name] = value
    if e.name is not None:
        fields["name_key"] = e.name.casefold()
    return [_own("products", e.product_id, rec.seq, {"$set": fields})]


def on_product_deleted(rec: RecordedEvent, e: ProductDeleted) -> list[Write]:
    update = {"$set": {"deleted": True, "updated_at": rec.at}}
    return [_own("products", e.product_id, rec.seq, update)]


def on_stock_adjusted(rec: RecordedEvent, e: StockAdjusted) -> list[Write]:
    update = {"$inc": {"stock": e.delta}, "$set": {"updated_at": rec.at}}
    return [_own("products", e.product_id, rec.seq, update)]


def on_order_billed(rec: RecordedEvent, e: OrderBilled) -> list[Write]:
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
    }
    # Only this event writes an order document: it can be inserted rather than upserted.
    order = Write("orders", e.order_id, {"$set": doc}, Own(rec.seq), upsert=True, sole_writer=True)
    account = {"$inc": {"orders_count": 1, "total_spent": e.total}}
    writes: list[Write] = [order, _cross("accounts", e.account_id, rec, account)]
    sold: dict[str, int] = defaultdict(int)
    for line in e.lines:
        sold[line.product_id] += line.quantity
    for product_id, quantity in sold.items():
        writes.append(_cross("products", product_id, rec, {"$inc": {"stock": -quantity}}))
    return writes


# -- categories (issue 15) --


def on_category_created(rec: RecordedEvent, e: CategoryCreated) -> list[Write]:
    """Also a re-creation of a deleted slug: every field is set again."""
    fields = {
        "name": e.name,
        "parent": e.parent,
        "deleted": False,
        "created_at": rec.at,
        "updated_at": rec.at,
    }
    return [_own("categories", e.slug, rec.seq, {"$set": fields}, upsert=True)]


def on_category_renamed(rec: RecordedEvent, e: CategoryRenamed) -> list[Write]:
    update = {"$set": {"name": e.name, "updated_at": rec.at}}
    return [_own("categories", e.slug, rec.seq, update)]


def on_category_deleted(rec: RecordedEvent, e: CategoryDeleted) -> list[Write]:
    update = {"$set": {"deleted": True, "updated_at": rec.at}}
    return [_own("categories", e.slug, rec.seq, update)]


def writes_for(rec: RecordedEvent, opener: Opener = CLEAR) -> list[Write]:
    """The route table: event type → its writes. Types not listed change no read model.
    ``opener`` holds the keys of the batch's account events (:meth:`ReadModelsProjection.opener`)."""
    match rec.event:
        case AccountCreated() as e:
            return on_account_created(rec, e, opener)
        case LoginSucceeded() as e:
            return on_login_succeeded(rec, e)
        case AccountProfileChanged() as e:
            return on_account_profile_changed(rec, e, opener)
        case CustomerForgotten() as e:
            return on_customer_forgotten(rec, e)
        case AccountDeactivated() | AccountReactivated() as e:
            return on_account_activation(rec, e)
        case PasswordChanged() as e:
            return on_password_changed(rec, e)
        case ProductCreated() as e:
            return on_product_created(rec, e)
        case ProductUpdated() as e:
            return on_product_updated(rec, e)
        case ProductDeleted() as e:
            return on_product_deleted(rec, e)
        case StockAdjusted() as e:
            return on_stock_adjusted(rec, e)
        case OrderBilled() as e:
            return on_order_billed(rec, e)
        case OrderPlaced() as e:
            return on_order_placed(rec, e)
        case PaymentDeclined() as e:
            return on_payment_declined(rec, e)
        case OrderPaid() as e:
            return on_order_paid(rec, e)
        case OrderExpired() as e:
            return on_order_expired(rec, e)
        case OrderCancelled() as e:
            return on_order_cancelled(rec, e)
        case RefundIssued() as e:
            return on_refund_issued(rec, e)
        case OrderShipped() as e:
            return on_order_shipped(rec, e)
        case OrderDelivered() as e:
            return on_order_delivered(rec, e)
        case CartItemSet() as e:
            return on_cart_item_set(rec, e)
        case CartItemRemoved() as e:
            return on_cart_item_removed(rec, e)
        case CartCheckedOut() as e:
            return on_cart_checked_out(rec, e)
        case CategoryCreated() as e:
            return on_category_created(rec, e)
        case CategoryRenamed() as e:
            return on_category_renamed(rec, e)
        case CategoryDeleted() as e:
            return on_category_deleted(rec, e)
        case _:
            return []
