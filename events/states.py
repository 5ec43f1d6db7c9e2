"""Decision state: one typed state per aggregate kind and the pure ``evolve`` that folds events into it.

The write side's Redis hashes (``{prefix}:state:{aggregate}``) are a cache of
``fold(evolve, initial, events)``: the store derives every write an append makes from
:func:`evolve` over the new events (:func:`events.store.derive_writes`), ``streamshop verify
state`` compares the hashes with the fold of the log, and ``streamshop rebuild state``
rewrites them from it. Nothing else writes them.

Rules for changing a state (they keep the cache rebuildable):
- a new field gets a default, and ``streamshop rebuild state`` backfills it;
- an event may change another aggregate's state (an order takes stock from its products)
  only through a field listed in that state's ``COUNTERS``: those are written as
  ``HINCRBY`` with a floor checked inside the atomic append, so such effects never need
  the other aggregate's version.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import msgspec

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
    EmailDigestUpgraded,
    Event,
    LoginFailed,
    LoginSucceeded,
    OrderBilled,
    OrderBillingAbandoned,
    OrderBillingStarted,
    OrderCancelled,
    OrderDelivered,
    OrderExpired,
    OrderLine,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    PasswordChanged,
    PaymentDeclined,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    RefundIssued,
    Role,
    StockAdjusted,
    StockReleased,
    StockReserved,
    StockTaken,
)


class AggregateState(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every decision state. ``v`` is the aggregate's version: how many events its own
    stream holds (``0``: it does not exist). ``evolve`` never touches it; the fold does."""

    COUNTERS: ClassVar[Mapping[str, int | None]] = {}
    """Numeric fields written as counters (``HINCRBY``), each with the floor it may not go
    below, checked inside the append; ``None``: counted, never guarded."""

    v: int = 0

    @property
    def exists(self) -> bool:
        return self.v > 0


class AccountState(AggregateState, frozen=True, kw_only=True):
    email: str = ""
    """Sealed (:mod:`events.personal`), like ``name``; both empty once forgotten. Clear for
    an account signed up before sealing that has not logged in since: its email is still
    reserved under the old, unkeyed name (``app.commands.accounts.email_reservation``)."""
    name: str = ""
    role: Role = "customer"
    password_hash: str = ""
    active: bool = True
    """``False`` after ``AccountDeactivated``: login and refresh are refused."""
    email_digest: str = ""
    """The keyed digest the email's reservation is held under (released on forgetting)."""
    forgotten: bool = False
    """``True`` after ``CustomerForgotten``: no command may touch the account again."""


class LoginState(AggregateState, frozen=True, kw_only=True):
    failures: tuple[int, ...] = ()
    """Epoch seconds of the failed attempts since the last success, oldest first; the
    decider drops the ones older than its window."""


class ProductState(AggregateState, frozen=True, kw_only=True):
    """``stock`` is what can still be sold; ``reserved`` counts the units held by unpaid
    checkouts (they left ``stock`` and return to it when the order expires or is cancelled)."""

    COUNTERS: ClassVar[Mapping[str, int]] = {"stock": 0, "reserved": 0}

    sku: str = ""
    name: str = ""
    description: str = ""
    category: str = ""
    price: int = 0
    currency: str = "BRL"
    stock: int = 0
    reserved: int = 0
    legacy_id: int | None = None
    deleted: bool = False
    seller_id: str = ""
    """The owning seller's account id; ``""`` for the shop's own products."""

    @property
    def live(self) -> bool:
        return self.exists and not self.deleted


class CategoryState(AggregateState, frozen=True, kw_only=True):
    """A category of the catalog tree (aggregate ``category:<slug>``).

    ``products`` and ``children`` are counters the events of other aggregates move (a
    product created in it, a child created under it), so they never need this category's
    version; a delete checks both are zero inside its append. Unguarded: a log written
    before they were counted lacks some decrements, and a refusal there would block a
    product's own change.
    """

    COUNTERS: ClassVar[Mapping[str, int | None]] = {"products": None, "children": None}

    name: str = ""
    parent: str = ""
    """The parent's slug; ``""`` at the root."""
    deleted: bool = False
    products: int = 0
    """Live products that name this category."""
    children: int = 0
    """Live categories whose parent this is."""

    @property
    def live(self) -> bool:
        return self.exists and not self.deleted


OrderStatus = Literal[
    "",
    "billed",
    "awaiting_payment",
    "paid",
    "shipped",
    "delivered",
    "partially_refunded",
    "refunded",
    "cancelled",
    "expired",
    "reserving",
    "abandoned",
]
"""``billed`` is a bill-now order (``OrderBilled``): placed and paid in one step, it behaves
as ``paid`` everywhere and the API shows it as ``paid``. ``reserving`` and ``abandoned``
belong to the billing saga of a Redis Cluster (:mod:`app.commands.saga`): its stock is
being reserved, or it stopped before billing."""


class OrderState(AggregateState, frozen=True, kw_only=True):
    status: OrderStatus = ""
    account_id: str = ""
    lines: tuple[OrderLine, ...] = ()
    total: int = 0
    currency: str = "BRL"
    reserved_until: int = 0
    """Epoch seconds; an ``awaiting_payment`` order expires from then on."""
    payment_attempts: int = 0
    """Attempts that reached a decision (declined or paid); the next one is this + 1."""
    payment_id: str = ""
    captured: int = 0
    refunded: int = 0
    refunds: int = 0
    """How many refunds were issued (names the next refund id)."""
    shipments: int = 0
    was_shipped: bool = False
    """Set once shipped and never cleared: an owner may not cancel after shipment, whatever
    the status became (a refund changes it)."""
    abandoned: str = ""
    """Why a billing saga was abandoned (``OrderBillingAbandoned.reason``)."""
    placing: bool = False
    """A checkout's saga (``OrderBillingStarted.place``): it confirms with ``OrderPlaced``,
    and its reservations then belong to the order's payment, expiry or cancellation."""

    @property
    def takings(self) -> int:
        """What was taken from the customer: the captured amount, or a bill-now order's total
        (billed without the payment port)."""
        return self.captured if self.payment_id else self.total

    @property
    def paid(self) -> bool:
        """Money (or a bill-now order) was taken and not fully returned."""
        return self.status in ("billed", "paid", "shipped", "delivered", "partially_refunded")


class CartItem(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    quantity: int


class CartState(AggregateState, frozen=True, kw_only=True):
    """A customer's cart (aggregate ``cart:<account id>``): product ids and quantities, in
    the order they were first added."""

    items: tuple[CartItem, ...] = ()


S = TypeVar("S", bound=AggregateState)


# -- evolve ------------------------------------------------------------------------------


class Context(NamedTuple):
    """What an event's envelope adds: whose state is evolving, and when the event was
    appended (epoch seconds)."""

    aggregate: str
    at: int = 0


MAX_REMEMBERED_FAILURES = 50
"""Login failures kept in the state; the rate limit looks at no more than its last few."""


def evolve_account(state: AccountState, event: Event, ctx: Context) -> AccountState:
    match event:
        case AccountCreated():
            return msgspec.structs.replace(
                state,
                email=event.email,
                name=event.name,
                role=event.role,
                password_hash=event.password_hash,
                email_digest=event.email_digest,
            )
        # -- accounts: profile, password, activation (issue 15) --
        case AccountProfileChanged(name=str() as name):
            return msgspec.structs.replace(state, name=name)
        case PasswordChanged():
            return msgspec.structs.replace(state, password_hash=event.password_hash)
        case AccountDeactivated():
            return msgspec.structs.replace(state, active=False)
        case AccountReactivated():
            return msgspec.structs.replace(state, active=True)
        case EmailDigestUpgraded():
            return msgspec.structs.replace(
                state, email=event.email, email_digest=event.email_digest
            )
        case CustomerForgotten():
            return msgspec.structs.replace(
                state,
                email="",
                name="",
                password_hash="",
                email_digest="",
                active=False,
                forgotten=True,
            )
    return state


def evolve_login(state: LoginState, event: Event, ctx: Context) -> LoginState:
    """A wrong password or an unknown email counts against the limit; a refusal because of
    the limit does not (it would extend the block forever), nor does the right password of
    a deactivated account; a success forgets them all."""
    match event:
        case LoginSucceeded():
            return msgspec.structs.replace(state, failures=())
        case LoginFailed(reason="rate_limited" | "deactivated"):
            return state
        case LoginFailed():
            failures = (*state.failures, ctx.at)[-MAX_REMEMBERED_FAILURES:]
            return msgspec.structs.replace(state, failures=failures)
    return state


def evolve_product(state: ProductState, event: Event, ctx: Context) -> ProductState:
    match event:
        case ProductCreated():
            # Stock only ever adds up: the fold reads partitions merged by time, so an order
            # may come before its product's creation when both share a millisecond.
            return ProductState(
                v=state.v,
                sku=event.sku,
                name=event.name,
                description=event.description,
                category=event.category,
                price=event.price,
                currency=event.currency,
                stock=state.stock + event.stock,
                legacy_id=event.legacy_id,
                seller_id=event.seller_id or "",
            )
        case ProductUpdated():
            changes = {
                name: value
                for name in ("name", "description", "category", "price", "currency")
                if (value := getattr(event, name)) is not None
            }
            return msgspec.structs.replace(state, **changes)
        case ProductDeleted():
            return msgspec.structs.replace(state, deleted=True)
        case StockAdjusted():
            return msgspec.structs.replace(state, stock=state.stock + event.delta)
        case OrderBilled(reserved=True) | OrderPlaced(reserved=True):
            return state  # the saga's StockReserved (and StockTaken) moved the stock
        case StockReserved(quantity=q):
            return msgspec.structs.replace(
                state, stock=state.stock - q, reserved=state.reserved + q
            )
        case StockReleased(quantity=q):
            return msgspec.structs.replace(
                state, stock=state.stock + q, reserved=state.reserved - q
            )
        case StockTaken(quantity=q):
            return msgspec.structs.replace(state, reserved=state.reserved - q)
        case OrderBilled():
            product_id = ctx.aggregate.removeprefix("product:")
            taken = sum(ln.quantity for ln in event.lines if ln.product_id == product_id)
            return msgspec.structs.replace(state, stock=state.stock - taken)
        case OrderCancelled():
            returned = _units(event.lines, ctx)
            reserved = state.reserved - returned if event.reserved else state.reserved
            return msgspec.structs.replace(state, stock=state.stock + returned, reserved=reserved)
        case OrderPlaced():
            held = _units(event.lines, ctx)
            return msgspec.structs.replace(
                state, stock=state.stock - held, reserved=state.reserved + held
            )
        case OrderPaid():
            return msgspec.structs.replace(
                state, reserved=state.reserved - _units(event.lines, ctx)
            )
        case OrderExpired():
            returned = _units(event.lines, ctx)
            return msgspec.structs.replace(
                state, stock=state.stock + returned, reserved=state.reserved - returned
            )
    return state


def _units(lines: Iterable[OrderLine], ctx: Context) -> int:
    """How many units of the product whose state evolves (``ctx``) ``lines`` hold."""
    product_id = ctx.aggregate.removeprefix("product:")
    return sum(ln.quantity for ln in lines if ln.product_id == product_id)


def evolve_order(state: OrderState, event: Event, ctx: Context) -> OrderState:
    match event:
        case OrderBilled():
            return msgspec.structs.replace(
                state,
                status="billed",
                account_id=event.account_id,
                lines=tuple(event.lines),
                total=event.total,
                currency=event.currency,
            )
        case OrderCancelled():
            return msgspec.structs.replace(
                state, status="cancelled", refunded=state.refunded + event.refunded
            )
        case OrderBillingStarted():
            return msgspec.structs.replace(
                state,
                status="reserving",
                placing=event.place,
                account_id=event.account_id,
                lines=tuple(event.lines),
                total=event.total,
                currency=event.currency,
                reserved_until=event.reserved_until,
            )
        case OrderBillingAbandoned():
            return msgspec.structs.replace(state, status="abandoned", abandoned=event.reason)
        case OrderPlaced():
            return msgspec.structs.replace(
                state,
                status="awaiting_payment",
                account_id=event.account_id,
                lines=tuple(event.lines),
                total=event.total,
                currency=event.currency,
                reserved_until=event.reserved_until,
            )
        case PaymentDeclined():
            return msgspec.structs.replace(state, payment_attempts=event.attempt)
        case OrderPaid():
            return msgspec.structs.replace(
                state,
                status="paid",
                payment_attempts=event.attempt,
                payment_id=event.payment_id,
                captured=state.captured + event.amount,
            )
        case OrderExpired():
            return msgspec.structs.replace(state, status="expired")
        case RefundIssued():
            refunded = state.refunded + event.amount
            status = "refunded" if refunded >= state.takings else "partially_refunded"
            return msgspec.structs.replace(
                state, status=status, refunded=refunded, refunds=state.refunds + 1
            )
        case OrderShipped():
            return msgspec.structs.replace(
                state, status="shipped", shipments=state.shipments + 1, was_shipped=True
            )
        case OrderDelivered():
            return msgspec.structs.replace(state, status="delivered")
    return state


def evolve_cart(state: CartState, event: Event, ctx: Context) -> CartState:
    match event:
        case CartItemSet():
            item = CartItem(product_id=event.product_id, quantity=event.quantity)
            ids = [i.product_id for i in state.items]
            if event.product_id in ids:
                items = tuple(item if i.product_id == event.product_id else i for i in state.items)
            else:
                items = (*state.items, item)
            return msgspec.structs.replace(state, items=items)
        case CartItemRemoved():
            items = tuple(i for i in state.items if i.product_id != event.product_id)
            return msgspec.structs.replace(state, items=items)
        case CartCheckedOut():
            return msgspec.structs.replace(state, items=())
    return state


def evolve_category(state: CategoryState, event: Event, ctx: Context) -> CategoryState:
    """A category's own events, and the counts that products and child categories move
    (``ctx.aggregate`` says which category evolves)."""
    own = event.aggregate() == ctx.aggregate
    slug = ctx.aggregate.removeprefix("category:")
    match event:
        case CategoryCreated() if own:
            return msgspec.structs.replace(
                state, name=event.name, parent=event.parent or "", deleted=False
            )
        case CategoryCreated():
            return msgspec.structs.replace(state, children=state.children + 1)
        case CategoryRenamed():
            return msgspec.structs.replace(state, name=event.name)
        case CategoryDeleted() if own:
            return msgspec.structs.replace(state, deleted=True)
        case CategoryDeleted():
            return msgspec.structs.replace(state, children=state.children - 1)
        case ProductCreated():
            return msgspec.structs.replace(state, products=state.products + 1)
        case ProductDeleted():
            return msgspec.structs.replace(state, products=state.products - 1)
        case ProductUpdated(previous_category=str()):
            moved = (event.category == slug) - (event.previous_category == slug)
            return msgspec.structs.replace(state, products=state.products + moved)
    return state


def _categories(event: Event) -> list[str]:
    """The categories whose counts ``event`` moves (besides a category's own events)."""
    match event:
        case ProductCreated() | ProductDeleted() if event.category:
            return [f"category:{event.category}"]
        case ProductUpdated(previous_category=str() as previous) if event.category != previous:
            return [f"category:{c}" for c in (event.category, previous) if c]
        case CategoryCreated(parent=str() as parent) | CategoryDeleted(parent=str() as parent):
            return [f"category:{parent}"] if parent else []
    return []


# -- the table: aggregate kind → (state type, evolve) -----------------------------------

Evolve = Callable[[Any, Event, Context], Any]

KINDS: dict[str, tuple[type[AggregateState], Evolve]] = {
    "account": (AccountState, evolve_account),
    "login": (LoginState, evolve_login),
    "product": (ProductState, evolve_product),
    "order": (OrderState, evolve_order),
    "cart": (CartState, evolve_cart),
    "category": (CategoryState, evolve_category),
}


def kind_of(aggregate: str) -> str:
    return aggregate.partition(":")[0]


def initial(aggregate: str) -> AggregateState:
    """The state of an aggregate before its first event."""
    return KINDS[kind_of(aggregate)][0]()


def affected(event: Event) -> list[str]:
    """Every aggregate whose decision state ``event`` changes: its own, plus cross-aggregate
    effects (an order takes stock from each of its products, a product counts in its
    category, a category in its parent)."""
    own = event.aggregate()
    if isinstance(event, OrderBilled | OrderPlaced) and event.reserved:
        return [own]
    if isinstance(event, OrderBilled | OrderCancelled | OrderPlaced | OrderPaid | OrderExpired):
        return [own, *dict.fromkeys(f"product:{ln.product_id}" for ln in event.lines)]
    return [own, *_categories(event)]


def evolve(aggregate: str, state: S, event: Event, at: int = 0) -> S:
    """``state`` of ``aggregate`` after ``event``; bumps ``v`` when the event is its own."""
    new: S = KINDS[kind_of(aggregate)][1](state, event, Context(aggregate, at))
    if event.aggregate() == aggregate:
        new = msgspec.structs.replace(new, v=state.v + 1)
    return new


def fold(aggregate: str, events: Iterable[Event | tuple[Event, int]], state: Any = None) -> Any:
    """The decision state of ``aggregate`` after ``events`` (each an event or ``(event, at)``),
    in log order; events that do not affect it are skipped."""
    current = initial(aggregate) if state is None else state
    for item in events:
        event, at = item if isinstance(item, tuple) else (item, 0)
        if aggregate in affected(event):
            current = evolve(aggregate, current, event, at)
    return current


# -- the hash codec ----------------------------------------------------------------------


def encode_field(value: Any) -> str | int:
    """How one field is stored in the hash (before ``str()``): ints as ints, booleans as 0/1,
    ``None`` as ``""``, a tuple of ints comma-joined (the login failures, as they always
    were stored), anything else as JSON."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | str):
        return value
    if value is None:
        return ""
    if isinstance(value, tuple) and all(isinstance(x, int) for x in value):
        return ",".join(str(x) for x in value)
    return msgspec.json.encode(value).decode()


def encode_state(state: AggregateState) -> dict[str, str]:
    """Every field of ``state`` as the hash holds it (``v`` included)."""
    return {f: str(encode_field(getattr(state, f))) for f in state.__struct_fields__}


def _decode_field(annotation: Any, raw: str) -> Any:
    """Inverse of :func:`encode_field` for one field's declared type."""
    if annotation is str:
        return raw
    if annotation is bool:
        return raw not in ("", "0")
    if annotation is int:
        return int(raw) if raw else 0
    if annotation == (int | None):
        return int(raw) if raw else None
    if annotation == tuple[int, ...]:
        return tuple(int(x) for x in raw.split(",") if x)
    if raw == "" and typing.get_origin(annotation) is tuple:
        return ()  # an empty tuple of anything is stored as "" (see encode_field)
    try:
        return msgspec.convert(raw, annotation)  # a Literal of strings
    except msgspec.ValidationError:
        return msgspec.json.decode(raw, type=annotation)


_HINTS: dict[type[AggregateState], dict[str, Any]] = {}


def decode_state(aggregate: str, raw: Mapping[str, str]) -> AggregateState:
    """The typed state of a hash (``{}``: the initial state). Fields the hash lacks take their
    defaults, so a hash written before a field existed still decodes (until rebuilt)."""
    cls = KINDS[kind_of(aggregate)][0]
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = {f.name: f.type for f in msgspec.structs.fields(cls)}
    values = {name: _decode_field(hints[name], raw[name]) for name in hints if name in raw}
    return cls(**values)
