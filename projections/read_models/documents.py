"""Beanie documents of the read models: what the query API reads, and the indexes it needs.

The projection writes these collections with raw, version-guarded bulk updates (see
:mod:`projections.read_models.projection`); Beanie is the typed read side. Fields that only
the projection uses for idempotency (``applied``) are not declared, so they never leave
the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel


class ShippingAddressView(BaseModel):
    line1: str
    line2: str = ""
    city: str
    region: str = ""
    postal_code: str
    country: str = "BR"


class AccountView(Document):
    """An account as its owner sees it; never a password hash."""

    id: str  # type: ignore[assignment]
    email: str = ""
    name: str = ""
    name_key: str = ""
    """The case-folded name (admin search)."""
    role: str = "customer"
    shipping_address: ShippingAddressView | None = None
    active: bool = True
    """``False`` while deactivated by an admin."""
    forgotten: bool = False
    """``True`` once the customer was forgotten: email, name and address are scrubbed."""
    created_at: datetime | None = None
    last_login_at: datetime | None = None
    orders_count: int = 0
    total_spent: int = 0
    version: int = 0
    """Aggregate version (``seq``) of the last account event applied; 0 for a stub."""

    class Settings:
        name = "accounts"
        indexes: list[IndexModel] = []
        """None: the admin search matches parts of the name or email (an unanchored regex
        that no index serves) and pages by ``_id``, while every order updates its account.
        :data:`RETIRED_INDEXES` drops the ``email`` index an earlier release created."""


class ProductView(Document):
    """The catalog as customers see it. ``name_key`` is the case-folded name (search, sort)."""

    id: str  # type: ignore[assignment]
    sku: str = ""
    name: str = ""
    name_key: str = ""
    description: str = ""
    category: str = ""
    price: int = 0
    currency: str = "BRL"
    stock: int = 0
    reserved: int = 0
    deleted: bool = False
    seller_id: str | None = None
    """The owning seller's account id (absent for the shop's own products)."""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0

    class Settings:
        name = "products"
        indexes = [
            IndexModel(
                [("deleted", ASCENDING), ("name_key", ASCENDING), ("_id", ASCENDING)],
                name="by_name",
            ),
            IndexModel(
                [("deleted", ASCENDING), ("price", ASCENDING), ("_id", ASCENDING)], name="by_price"
            ),
            IndexModel(
                [("deleted", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
                name="by_created",
            ),
            IndexModel(
                [("deleted", ASCENDING), ("category", ASCENDING), ("price", ASCENDING)],
                name="by_category",
            ),
        ]
        """The catalog query's sorts and category filter, each after ``deleted`` (always in
        the filter). No index on ``stock`` or ``sku``: no query needs one (``in_stock`` only
        narrows a sorted walk of one of these), and a sale updates every index of each
        product it touches on SecantusDB (~0.25 ms each); on MongoDB, one on ``stock`` would
        still be rewritten by every sale. :data:`RETIRED_INDEXES` drops them where an earlier
        release created them."""


class OrderLineView(BaseModel):
    product_id: str
    name: str
    quantity: int
    unit_price: int
    line_total: int


class OrderView(Document):
    """An order, listed newest first per account (``billed_at``: when it was billed or
    checked out).

    ``history``, ``payments``, ``refunds`` and ``shipments`` are maps keyed ``s<seq>`` (the
    event's version in the order's stream), so each event sets its own entry and a replay
    sets it again; the query API lists them in that order.
    """

    id: str  # type: ignore[assignment]
    account_id: str
    lines: list[OrderLineView] = Field(default_factory=list)
    total: int = 0
    currency: str = "BRL"
    billed_at: datetime
    status: str = "paid"
    history: dict[str, dict[str, Any]] = Field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = Field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = Field(default_factory=dict)
    shipments: dict[str, dict[str, Any]] = Field(default_factory=dict)
    reserved_until: datetime | None = None
    version: int = 0

    class Settings:
        name = "orders"
        indexes = [
            IndexModel(
                [("account_id", ASCENDING), ("billed_at", DESCENDING), ("_id", DESCENDING)],
                name="by_account_newest",
            )
        ]


class CartItemView(BaseModel):
    product_id: str
    quantity: int


class CartView(Document):
    """A customer's cart as the log last left it (``_id`` = account id); emptied by a
    checkout. ``items`` is keyed by ``projections.read_models.carts.item_key`` and keeps the
    order products were added in. ``GET /cart`` reads the write side instead
    (read-your-writes); this view serves other readers, ``verify`` and ``rebuild``."""

    id: str  # type: ignore[assignment]
    account_id: str = ""
    items: dict[str, CartItemView] = Field(default_factory=dict)
    last_order_id: str | None = None
    """The order the last checkout made of this cart."""
    updated_at: datetime | None = None
    version: int = 0

    class Settings:
        name = "carts"


class CategoryView(Document):
    """A node of the category tree (``_id`` = slug); deleted ones stay, flagged."""

    id: str  # type: ignore[assignment]
    name: str = ""
    parent: str | None = None
    deleted: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0

    class Settings:
        name = "categories"


RETIRED_INDEXES: dict[str, tuple[str, ...]] = {
    "accounts": ("email",),
    "products": ("by_stock", "by_sku"),
}
"""Indexes an earlier release declared and no query uses, by role: the projection's setup
drops them from live collections (a rebuild's fresh version never has them)."""

DOCUMENTS: list[type[Document]] = [AccountView, ProductView, OrderView, CartView, CategoryView]
"""Pass to ``init_beanie(database=db, document_models=DOCUMENTS)``."""
