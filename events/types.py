"""The event catalog: every fact the shop records, as frozen msgspec Structs in one tagged union.

Rules for changing this file (they keep the log readable forever):
- add fields only with a default; never rename or retype a field in place;
- a breaking change bumps the type's ``SCHEMA`` and registers an upcaster in
  ``events/upcasting.py`` that turns the old shape into the new one.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

Money = Annotated[int, msgspec.Meta(ge=0, description="Amount in integer minor units (centavos).")]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$", description="ISO 4217 currency code.")]
Role = Literal["customer", "admin", "seller"]


class BaseEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Common base: the tag (``type``) is the class name; ``SCHEMA`` is the current version."""

    SCHEMA: ClassVar[int] = 1

    def aggregate(self) -> str:  # pragma: no cover - every event overrides it
        raise NotImplementedError


class AccountCreated(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A customer (or admin) account was opened. The only event that carries the password hash.

    Schema 2: ``email`` and ``name`` are sealed with the account's key
    (:mod:`events.personal`) and ``email_digest`` is the keyed digest the email is looked up
    by. Schema 1 events hold both in clear; their upcast keeps the text and derives the old,
    unkeyed digest, so a rebuild keeps their warehouse rows.
    """

    SCHEMA: ClassVar[int] = 2

    account_id: str
    email: str
    name: str
    password_hash: str
    role: Role = "customer"
    email_digest: str = ""

    def aggregate(self) -> str:
        return f"account:{self.account_id}"


class LoginSucceeded(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A login with the right credentials; ``email_digest`` names the login aggregate."""

    account_id: str
    email_digest: str

    def aggregate(self) -> str:
        return f"login:{self.email_digest}"


class LoginFailed(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A refused login. Unknown emails are recorded by digest only, never by address.
    ``deactivated``: the right password for a deactivated account."""

    email_digest: str
    reason: Literal["unknown_email", "wrong_password", "rate_limited", "deactivated"]
    account_id: str | None = None

    def aggregate(self) -> str:
        return f"login:{self.email_digest}"


class ProductCreated(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A product entered the catalog with its opening stock."""

    product_id: str
    sku: str
    name: str
    description: str = ""
    category: str = ""
    price: Money
    currency: Currency = "BRL"
    stock: Annotated[int, msgspec.Meta(ge=0)] = 0
    legacy_id: int | None = None
    seller_id: str | None = None
    """The seller account that owns the product; ``None`` for the shop's own (admin) products."""

    def aggregate(self) -> str:
        return f"product:{self.product_id}"


class ProductUpdated(BaseEvent, frozen=True, kw_only=True, tag=True):
    """Some catalog fields of a product changed; a field left ``None`` is unchanged."""

    product_id: str
    name: str | None = None
    description: str | None = None
    category: str | None = None
    price: Money | None = None
    currency: Currency | None = None
    previous_category: str | None = None
    """When ``category`` changes, the one it replaces (``""``: none), so both categories'
    product counts move; ``None`` in events that change no category, and in events
    written before categories counted their products."""

    def aggregate(self) -> str:
        return f"product:{self.product_id}"


class ProductDeleted(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A product left the catalog; it can no longer be billed."""

    product_id: str
    category: str | None = None
    """The product's category when it left, whose product count drops; ``None``: none, or
    an event written before categories counted their products."""

    def aggregate(self) -> str:
        return f"product:{self.product_id}"


class StockAdjusted(BaseEvent, frozen=True, kw_only=True, tag=True):
    """Stock changed by hand (receiving goods, breakage, counting); orders do not emit this."""

    product_id: str
    delta: int
    reason: str = ""

    def aggregate(self) -> str:
        return f"product:{self.product_id}"


class OrderLine(msgspec.Struct, frozen=True, kw_only=True):
    """One billed line, priced from the catalog state at billing time."""

    product_id: str
    name: str
    quantity: Annotated[int, msgspec.Meta(ge=1)]
    unit_price: Money
    line_total: Money


class OrderBilled(BaseEvent, frozen=True, kw_only=True, tag=True):
    """An order was billed: stock was taken and the total is final.

    Schema 2 named the per-line price ``unit_price`` and added ``line_total``; schema 1
    events (``price`` only) are upcast on read.
    """

    SCHEMA: ClassVar[int] = 2

    order_id: str
    account_id: str
    lines: list[OrderLine]
    total: Money
    currency: Currency = "BRL"
    reserved: bool = False
    """``True``: billed by the saga of a Redis Cluster (``OrderBillingStarted``); the stock
    was reserved by its products' ``StockReserved`` and leaves ``reserved`` by
    ``StockTaken``, so this event changes no product's decision state."""

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class OrderCancelled(BaseEvent, frozen=True, kw_only=True, tag=True):
    """An order was cancelled: its lines went back into stock.

    ``reserved``: the lines were only reserved (an unpaid order), so ``reserved`` drops as
    well. ``refunded``: the part of the captured amount refunded by this cancellation.
    """

    order_id: str
    account_id: str
    lines: list[OrderLine]
    reason: str = ""
    reserved: bool = False
    refunded: Annotated[int, msgspec.Meta(ge=0)] = 0

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class CartItemSet(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A customer put ``quantity`` units of a product in their cart (replacing any earlier
    quantity). Prices are not kept: the cart is priced at the current catalog price."""

    account_id: str
    product_id: str
    quantity: Annotated[int, msgspec.Meta(ge=1)]

    def aggregate(self) -> str:
        return f"cart:{self.account_id}"


class CartItemRemoved(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A product left a customer's cart."""

    account_id: str
    product_id: str

    def aggregate(self) -> str:
        return f"cart:{self.account_id}"


class CartCheckedOut(BaseEvent, frozen=True, kw_only=True, tag=True):
    """The cart became order ``order_id`` and is empty again (appended with its ``OrderPlaced``)."""

    account_id: str
    order_id: str

    def aggregate(self) -> str:
        return f"cart:{self.account_id}"


class OrderPlaced(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A checkout: every line's stock was reserved until ``reserved_until`` (epoch seconds);
    the order awaits payment. Reserved units leave ``stock`` and count in ``reserved``."""

    order_id: str
    account_id: str
    lines: list[OrderLine]
    total: Money
    currency: Currency = "BRL"
    reserved_until: int
    reserved: bool = False
    """``True``: placed by the checkout saga of a Redis Cluster; its products' own
    ``StockReserved`` moved the stock, so this event changes no product's state."""

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class PaymentDeclined(BaseEvent, frozen=True, kw_only=True, tag=True):
    """The acquirer declined payment attempt ``attempt``; the order stays payable and the
    next attempt gets a new provider idempotency key."""

    order_id: str
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    provider: str = "sandbox"
    reason: str = ""

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class OrderPaid(BaseEvent, frozen=True, kw_only=True, tag=True):
    """Attempt ``attempt`` was authorized for ``amount``: the reservation became a sale
    (``reserved`` drops, ``stock`` stays down)."""

    order_id: str
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    payment_id: str
    amount: Money
    currency: Currency = "BRL"
    provider: str = "sandbox"
    lines: list[OrderLine]
    account_id: str = ""

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class OrderExpired(BaseEvent, frozen=True, kw_only=True, tag=True):
    """An unpaid order's reservation ran out: its lines went back into ``stock``."""

    order_id: str
    lines: list[OrderLine]

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class OrderBillingStarted(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A bill-now order whose products live in other hash slots than the order began its
    saga (Redis Cluster only, :mod:`app.commands.saga`): lines, prices and total are fixed;
    each product's stock is reserved by its own ``StockReserved`` until ``reserved_until``
    (epoch seconds). It ends billed (``OrderBilled`` with ``reserved``) or abandoned."""

    order_id: str
    account_id: str
    lines: list[OrderLine]
    total: Money
    currency: Currency = "BRL"
    reserved_until: int
    place: bool = False
    """``True``: a checkout's saga; it ends with ``OrderPlaced(reserved=True)`` (the order
    then awaits payment) instead of ``OrderBilled``."""

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class OrderBillingAbandoned(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A billing saga stopped before the order was billed: a product could not be reserved
    (``insufficient_stock``, ``unknown_product``) or the saga ran past its deadline
    (``expired``). The reservations it holds are released by ``StockReleased``."""

    order_id: str
    reason: str
    product_id: str = ""
    detail: str = ""

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class StockReserved(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A saga step: ``quantity`` units of the product left ``stock`` for ``reserved``, held
    for order ``order_id`` until ``reserved_until`` (epoch seconds)."""

    product_id: str
    order_id: str
    quantity: Annotated[int, msgspec.Meta(ge=1)]
    reserved_until: int

    def aggregate(self) -> str:
        return f"product:{self.product_id}"


class StockReleased(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A saga's compensation: the units ``StockReserved`` held for ``order_id`` are back in
    ``stock``."""

    product_id: str
    order_id: str
    quantity: Annotated[int, msgspec.Meta(ge=1)]

    def aggregate(self) -> str:
        return f"product:{self.product_id}"


class StockTaken(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A saga's last step: order ``order_id`` is billed, so the units held for it leave
    ``reserved`` for good."""

    product_id: str
    order_id: str
    quantity: Annotated[int, msgspec.Meta(ge=1)]

    def aggregate(self) -> str:
        return f"product:{self.product_id}"


SAGA_EVENTS: tuple[type[BaseEvent], ...] = (
    OrderBillingStarted,
    OrderBillingAbandoned,
    StockReserved,
    StockReleased,
    StockTaken,
)
"""The events of the billing saga on a Redis Cluster; projections ignore them (the order
and its stock show through the ``OrderBilled`` that ends a saga)."""


class RefundIssued(BaseEvent, frozen=True, kw_only=True, tag=True):
    """Part or all of the captured amount was refunded (refund ``refund_id``)."""

    order_id: str
    refund_id: str
    amount: Annotated[int, msgspec.Meta(ge=1)]
    reason: str = ""
    full: bool = False
    """This refund brought the refunded total up to everything taken (status ``refunded``)."""

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class OrderShipped(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A paid order left the warehouse."""

    order_id: str
    shipment_id: str
    carrier: str
    tracking_code: str

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


class OrderDelivered(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A shipped order reached its customer."""

    order_id: str

    def aggregate(self) -> str:
        return f"order:{self.order_id}"


# -- accounts: profile, password, activation (issue 15) ---------------------------------


class ShippingAddress(msgspec.Struct, frozen=True, kw_only=True):
    """Where a customer's orders go."""

    line1: str
    line2: str = ""
    city: str
    region: str = ""
    postal_code: str
    country: Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")] = "BR"


class AccountProfileChanged(BaseEvent, frozen=True, kw_only=True, tag=True):
    """The customer changed their profile; a field left ``None`` is unchanged.

    Schema 2: ``name`` is sealed and ``shipping_address`` is a :class:`ShippingAddress` as
    JSON, sealed (:mod:`events.personal`). Schema 1 held the address as an object, in clear;
    the upcast turns it into its JSON text.
    """

    SCHEMA: ClassVar[int] = 2

    account_id: str
    name: str | None = None
    shipping_address: str | None = None

    def aggregate(self) -> str:
        return f"account:{self.account_id}"


class PasswordChanged(BaseEvent, frozen=True, kw_only=True, tag=True):
    """The password was replaced; the old hash stops working. Like ``AccountCreated``, it
    carries a password hash, which only the write side's state keeps (views drop it)."""

    account_id: str
    password_hash: str

    def aggregate(self) -> str:
        return f"account:{self.account_id}"


class AccountDeactivated(BaseEvent, frozen=True, kw_only=True, tag=True):
    """An admin deactivated the account: it can no longer log in or refresh a session."""

    account_id: str
    reason: str = ""

    def aggregate(self) -> str:
        return f"account:{self.account_id}"


class AccountReactivated(BaseEvent, frozen=True, kw_only=True, tag=True):
    """An admin reactivated a deactivated account."""

    account_id: str

    def aggregate(self) -> str:
        return f"account:{self.account_id}"


class CustomerForgotten(BaseEvent, frozen=True, kw_only=True, tag=True):
    """The customer was forgotten: its key is destroyed, so every sealed field of the account
    is unreadable for good; its email is free again. Views drop what they had opened; sales
    and orders stay, under the account id."""

    account_id: str

    def aggregate(self) -> str:
        return f"account:{self.account_id}"


class EmailDigestUpgraded(BaseEvent, frozen=True, kw_only=True, tag=True):
    """An account signed up before keyed digests logged in, so its email moved forward: its
    reservation left the old, unkeyed name for ``email_digest`` (the keyed one) in the same
    atomic append, and ``email`` is the address sealed with the account's key. The account's
    schema 1 ``AccountCreated`` keeps the clear address; nothing can rewrite it."""

    account_id: str
    email_digest: str
    email: str

    def aggregate(self) -> str:
        return f"account:{self.account_id}"


ACCOUNT_LIFECYCLE_EVENTS: tuple[type[BaseEvent], ...] = (
    AccountProfileChanged,
    PasswordChanged,
    AccountDeactivated,
    AccountReactivated,
    CustomerForgotten,
    EmailDigestUpgraded,
)

# -- end of the accounts block -----------------------------------------------------------

# -- categories (issue 15) -----------------------------------------------------------------


class CategoryCreated(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A category entered the catalog tree (under ``parent``, or at the root); a deleted
    slug may be created again."""

    slug: str
    name: str
    parent: str | None = None

    def aggregate(self) -> str:
        return f"category:{self.slug}"


class CategoryRenamed(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A category's display name changed; its slug, which products carry, stays."""

    slug: str
    name: str

    def aggregate(self) -> str:
        return f"category:{self.slug}"


class CategoryDeleted(BaseEvent, frozen=True, kw_only=True, tag=True):
    """A category left the tree: new products may no longer name it. Only an empty one is
    deleted (no live product, no child category)."""

    slug: str
    parent: str | None = None
    """The parent it leaves, whose count of children drops (``None``: at the root)."""

    def aggregate(self) -> str:
        return f"category:{self.slug}"


CATEGORY_EVENTS: tuple[type[BaseEvent], ...] = (CategoryCreated, CategoryRenamed, CategoryDeleted)

# -- end of the categories block -----------------------------------------------------------


Event = (
    AccountCreated
    | LoginSucceeded
    | LoginFailed
    | ProductCreated
    | ProductUpdated
    | ProductDeleted
    | StockAdjusted
    | OrderBilled
    | OrderCancelled
    | AccountProfileChanged
    | PasswordChanged
    | AccountDeactivated
    | AccountReactivated
    | CustomerForgotten
    | EmailDigestUpgraded
    | CategoryCreated
    | CategoryRenamed
    | CategoryDeleted
    | CartItemSet
    | CartItemRemoved
    | CartCheckedOut
    | OrderPlaced
    | PaymentDeclined
    | OrderPaid
    | OrderExpired
    | RefundIssued
    | OrderShipped
    | OrderDelivered
    | OrderBillingStarted
    | OrderBillingAbandoned
    | StockReserved
    | StockReleased
    | StockTaken
)
"""The one tagged union every stored, ingested or replayed event decodes into."""

EVENT_TYPES: dict[str, type[BaseEvent]] = {
    cls.__name__: cls
    for cls in (
        AccountCreated,
        LoginSucceeded,
        LoginFailed,
        ProductCreated,
        ProductUpdated,
        ProductDeleted,
        StockAdjusted,
        OrderBilled,
        OrderCancelled,
        *ACCOUNT_LIFECYCLE_EVENTS,
        *CATEGORY_EVENTS,
        CartItemSet,
        CartItemRemoved,
        CartCheckedOut,
        OrderPlaced,
        PaymentDeclined,
        OrderPaid,
        OrderExpired,
        RefundIssued,
        OrderShipped,
        OrderDelivered,
        *SAGA_EVENTS,
    )
}

CATALOG_EVENT_TYPES: frozenset[str] = frozenset(
    {"ProductCreated", "ProductUpdated", "ProductDeleted", "StockAdjusted"}
)
"""The types an external producer may publish to an ingress stream."""
