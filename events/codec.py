"""The envelope and its one codec: events to stream fields and back, with upcasting on read.

A log entry is written in one of two forms, and both are read back as the same envelope:

* **full** (every entry written before the compact form, and a new entry whose ``at`` the
  id cannot carry): the fields of :data:`FIELDS`, ``data`` tagged with its ``type``.
* **compact** (what the store writes whenever it can): the fields of
  :data:`COMPACT_FIELDS`. ``at`` is left out because the id is a UUIDv7 whose millisecond
  *is* ``at``; ``correlation`` is ``""`` where it equals the event's own id; ``data``
  omits its ``type`` tag (the envelope's ``type``) and, for the types of
  :data:`AGGREGATE_ID_FIELDS`, the aggregate's id (in the envelope's ``aggregate``). An
  entry without an ``at`` field is compact; every full entry has one, so the form needs no
  marker of its own. For a type of :data:`SHORT_KEYS` (``OrderBilled``) the compact
  ``data`` is *short*: short stable keys, and no value the reader derives; it is known by
  its first key (:func:`short_keys`).

Nothing is ever rewritten: :func:`decode_entry` upcasts a compact entry to the full
envelope on read, and :func:`full_fields` gives its fields in the full form for readers
that show the stored fields (the API's feeds, the lake).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Annotated, Any

import msgspec

from events.errors import MalformedEvent
from events.ids import format_at, ms_at, parse_at, uuid7_ms
from events.types import EVENT_TYPES, BaseEvent, Currency, Event, Money, OrderBilled, OrderLine
from events.upcasting import upcast

FIELDS: tuple[str, ...] = (
    "id",
    "type",
    "schema",
    "aggregate",
    "seq",
    "at",
    "actor",
    "correlation",
    "causation",
    "source",
    "data",
)
"""The fields of a full entry, in this order; also the audit's canonical order."""

COMPACT_FIELDS: tuple[str, ...] = tuple(name for name in FIELDS if name != "at")
"""The fields of a compact entry, in this order. Every compact entry has exactly these, so
Redis stores the names once per stream node (the listpack "same fields" flag: an entry
whose names equal the node's first entry's stores its values only)."""

_FIELD_KEYS = tuple(name.encode() for name in FIELDS)

Fields = dict[bytes, bytes] | dict[str, str]
"""A stream entry's fields as the Redis client returned them (bytes, or text when decoded)."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)
_raw_decoder = msgspec.json.Decoder(dict[str, Any])
_tags = {name: b'{"type":"%b"' % name.encode() for name in EVENT_TYPES}


AGGREGATE_ID_FIELDS: dict[str, tuple[str, str]] = {
    "AccountCreated": ("account:", "account_id"),
    "LoginFailed": ("login:", "email_digest"),
    "ProductCreated": ("product:", "product_id"),
    "ProductUpdated": ("product:", "product_id"),
    "ProductDeleted": ("product:", "product_id"),
    "StockAdjusted": ("product:", "product_id"),
    "OrderBilled": ("order:", "order_id"),
    "OrderCancelled": ("order:", "order_id"),
    "AccountProfileChanged": ("account:", "account_id"),
    "PasswordChanged": ("account:", "account_id"),
    "AccountDeactivated": ("account:", "account_id"),
    "AccountReactivated": ("account:", "account_id"),
    "CustomerForgotten": ("account:", "account_id"),
    "CategoryCreated": ("category:", "slug"),
    "CategoryRenamed": ("category:", "slug"),
    "CategoryDeleted": ("category:", "slug"),
    "CartItemSet": ("cart:", "account_id"),
    "CartItemRemoved": ("cart:", "account_id"),
    "CartCheckedOut": ("cart:", "account_id"),
    "OrderPlaced": ("order:", "order_id"),
    "PaymentDeclined": ("order:", "order_id"),
    "OrderPaid": ("order:", "order_id"),
    "OrderExpired": ("order:", "order_id"),
    "RefundIssued": ("order:", "order_id"),
    "OrderShipped": ("order:", "order_id"),
    "OrderDelivered": ("order:", "order_id"),
    "EmailDigestUpgraded": ("account:", "account_id"),
    "OrderBillingStarted": ("order:", "order_id"),
    "OrderBillingAbandoned": ("order:", "order_id"),
    "StockReserved": ("product:", "product_id"),
    "StockReleased": ("product:", "product_id"),
    "StockTaken": ("product:", "product_id"),
}
"""Type → (``"<kind>:"``, field) for the types whose compact ``data`` leaves out the field
that ``aggregate`` (``<kind>:<field>``) already holds, always the type's first field.

Part of the stored format, so a literal: entries are read back with this table. A type may
join it (its older compact entries have the field, which is then kept), never leave it, and
its field must stay the first (``tests/unit/test_codec.py`` checks both against the types).
"""

_aggregate_keys = {
    name: (kind, b'"%b":' % field.encode()) for name, (kind, field) in AGGREGATE_ID_FIELDS.items()
}


def aggregate_id_field(cls: type[BaseEvent]) -> tuple[str, str] | None:
    """``("<kind>:", field)`` when ``cls.aggregate()`` is ``<kind>:<field>`` for the type's
    first field, a string; ``None`` otherwise. Found by calling ``aggregate`` on a probe
    naming each field; the check behind :data:`AGGREGATE_ID_FIELDS`."""
    names = cls.__struct_fields__
    if not names or msgspec.structs.fields(cls)[0].type is not str:
        return None
    try:
        text = cls.aggregate(SimpleNamespace(**{n: "\0" + n for n in names}))  # type: ignore[arg-type]
    except Exception:  # any other shape of aggregate()
        return None
    kind, sep, rest = text.partition(":")
    if not sep or rest != "\0" + names[0] or "\0" in kind:
        return None
    return kind + ":", msgspec.structs.fields(cls)[0].encode_name


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as read back from the log: the envelope plus the decoded, upcast payload.

    ``fields`` is the entry exactly as stored (the very mapping the reader got, not a copy).
    The audit hashes it, so that its chain does not depend on this decoder or its upcasters.
    """

    entry_id: str
    partition: int
    id: str
    type: str
    schema: int
    aggregate: str
    seq: int
    at: datetime
    actor: str
    correlation: str
    causation: str
    source: str
    event: Event
    fields: Fields | None = None

    @property
    def position(self) -> str:
        """This entry's read-your-writes token (see :mod:`events.positions`)."""
        from events.positions import format_position

        return format_position({self.partition: self.entry_id})


class UndecodableEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A log entry that does not decode, kept as stored.

    The runtime hands these only to a projection that sets ``records_raw = True`` (the
    audit), in log order inside the same batch as the decoded events, so that it can record
    every entry; every other view retries and dead-letters them.
    """

    entry_id: str
    partition: int
    fields: Fields
    error: str
    """Why it does not decode (the :class:`MalformedEvent` message)."""

    def _field(self, name: str) -> str:
        raw = self.fields.get(name.encode(), self.fields.get(name, b""))  # type: ignore[call-overload]
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)

    @property
    def id(self) -> str:
        """The stored event id, if any (for logs and dead letters)."""
        return self._field("id")

    @property
    def aggregate(self) -> str:
        """The stored aggregate, if any (its dead letter parks that aggregate's sequence)."""
        return self._field("aggregate")

    @property
    def type(self) -> str:
        return self._field("type")


Recorded = RecordedEvent | UndecodableEntry
"""What a ``records_raw`` projection's batch holds."""


def undecodable(
    entry_id: bytes | str, fields: Fields, partition: int, error: MalformedEvent
) -> UndecodableEntry:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return UndecodableEntry(entry_id=eid, partition=partition, fields=fields, error=error.reason)


def encode_data(event: Event) -> bytes:
    """The ``data`` field of an entry: the event as JSON (its ``type`` tag included)."""
    return _encoder.encode(event)


def compact_data(event: Event, aggregate: str) -> bytes:
    """The ``data`` of a compact entry: :func:`encode_data` without what the envelope holds.

    msgspec writes the tag first and then the fields in order, so both are a prefix: the
    ``type`` tag (the envelope's ``type``) and, for a type of :data:`AGGREGATE_ID_FIELDS`,
    its first field (in the envelope's ``aggregate``). :func:`full_data` puts them back.
    """
    name = type(event).__name__
    raw = _encoder.encode(event)
    tag = _tags[name]
    if not raw.startswith(tag):  # pragma: no cover - msgspec always writes the tag first
        raise AssertionError(f"{name} encoded without its leading tag: {raw[:40]!r}")
    start = len(tag)  # at the "," before the first field, or the closing "}"
    key = _aggregate_keys.get(name)
    if key is not None and aggregate.startswith(key[0]):
        head = b"," + key[1] + _encoder.encode(aggregate[len(key[0]) :])
        if raw.startswith(head, start):
            start += len(head)
    return b"{" + raw[start + 1 :] if raw[start : start + 1] == b"," else b"{}"


def full_data(event_type: str, aggregate: str, data: bytes) -> bytes:
    """Compact ``data`` in its full form: the ``type`` tag and the aggregate's id field put
    back (and short data's keys and left-out values, :data:`SHORT_KEYS`), the bytes
    :func:`encode_data` gives. Data that is no JSON object, or has them
    already, keeps what it has (a broken entry stays as broken as it was)."""
    tag = _tags.get(event_type)
    if tag is None or data[:1] != b"{" or data.startswith(b'{"type":'):
        return data
    if (keys := short_keys(event_type, data)) is not None:
        return _full_short(event_type, keys, aggregate, data)
    head = tag
    key = _aggregate_keys.get(event_type)
    if key is not None and aggregate.startswith(key[0]) and not data.startswith(b"{" + key[1]):
        head += b"," + key[1] + _encoder.encode(aggregate[len(key[0]) :])
    return head + (b"}" if data[1:].lstrip() == b"}" else b"," + data[1:])


# -- short data: stable short keys and omitted derivable values --------------------------------

SHORT_LINE_KEYS: tuple[tuple[str, str], ...] = (
    ("product_id", "p"),
    ("name", "n"),
    ("quantity", "q"),
    ("unit_price", "u"),
    ("line_total", "t"),
)
"""An :class:`~events.types.OrderLine` in short data: field → key, in the field order.
``t`` is left out when it is ``q * u``."""

SHORT_KEYS: dict[tuple[str, int], tuple[tuple[str, str], ...]] = {
    ("OrderBilled", 2): (
        ("account_id", "a"),
        ("lines", "l"),
        ("total", "t"),
        ("currency", "c"),
        ("reserved", "r"),
    ),
}
"""(type, schema) → (field → key, in the field order, the aggregate's id field left out) of
the types whose compact ``data`` may be *short*: every field under its short key, and left
out where the reader derives it: ``lines`` as :data:`SHORT_LINE_KEYS`; ``total`` when it is
the sum of the lines' ``line_total``; ``currency`` when it is ``"BRL"``; ``reserved`` when
it is ``false``.

Part of the stored format, so literals: the keys, and what an absent key stands for, never
change for a (type, schema); a new schema of a type needs an entry of its own (older short
entries keep theirs and are upcast like any other). Short data is recognised by its first
key (the first short key here, a required field's), which is no field name of its type;
compact data of the older form always starts with one of those, so the two cannot be
confused and neither needs a marker. ``tests/unit/test_codec_short.py`` checks that each
entry names exactly its type's fields, in order; a type whose fields no longer match is
written in the older compact form (:func:`compact_data`), so nothing is ever dropped."""

_SHORT_OMITTED = {"currency": "BRL", "reserved": False}
"""The fixed values an absent short key stands for (beside the derived totals)."""


def _fields_match(cls: type[BaseEvent], keys: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``keys`` name every field of ``cls`` after its aggregate's id, in order."""
    names = tuple(f.encode_name for f in msgspec.structs.fields(cls))
    id_field = AGGREGATE_ID_FIELDS.get(cls.__name__, ("", ""))[1]
    return names == (id_field, *(long for long, _ in keys))


_short = {
    name: keys
    for (name, schema), keys in SHORT_KEYS.items()
    if EVENT_TYPES[name].SCHEMA == schema and _fields_match(EVENT_TYPES[name], keys)
}
"""The short forms this release writes (type → keys): those of each type's current schema
whose fields it names exactly."""


def _heads() -> dict[str, tuple[tuple[bytes, tuple[tuple[str, str], ...]], ...]]:
    heads: dict[str, tuple[tuple[bytes, tuple[tuple[str, str], ...]], ...]] = {}
    for (name, _), keys in sorted(SHORT_KEYS.items()):
        heads[name] = (*heads.get(name, ()), (b'{"%b":' % keys[0][1].encode(), keys))
    return heads


_short_heads = _heads()
"""Type → (first key of its short data, its keys) per schema: short data is known by its
first key alone (each short form of a type starts with a key of its own)."""
_line_fields = tuple(long for long, _ in SHORT_LINE_KEYS)
_short_lines_ok = tuple(f.encode_name for f in msgspec.structs.fields(OrderLine)) == _line_fields


def _short_line(line: OrderLine) -> dict[str, Any]:
    out: dict[str, Any] = {
        "p": line.product_id,
        "n": line.name,
        "q": line.quantity,
        "u": line.unit_price,
    }
    if line.line_total != line.quantity * line.unit_price:
        out["t"] = line.line_total
    return out


def short_data(event: Event, aggregate: str) -> bytes | None:
    """The short ``data`` of a compact entry (see :data:`SHORT_KEYS`), or ``None`` when the
    event's type has no short form here or its aggregate does not hold its id field (then
    :func:`compact_data` is the data)."""
    name = type(event).__name__
    if name not in _short or not isinstance(event, OrderBilled) or not _short_lines_ok:
        return None
    if aggregate != "order:" + event.order_id:
        return None
    out: dict[str, Any] = {"a": event.account_id, "l": [_short_line(x) for x in event.lines]}
    if event.total != sum(x.line_total for x in event.lines):
        out["t"] = event.total
    if event.currency != _SHORT_OMITTED["currency"]:
        out["c"] = event.currency
    if event.reserved is not _SHORT_OMITTED["reserved"]:
        out["r"] = event.reserved
    return _encoder.encode(out)


def short_keys(event_type: str, data: bytes) -> tuple[tuple[str, str], ...] | None:
    """The keys of the short form that compact ``data`` is in (:data:`SHORT_KEYS`), known
    by its first key; ``None`` when it is not short."""
    for head, keys in _short_heads.get(event_type, ()):
        if data.startswith(head):
            return keys
    return None


def _long(item: dict[str, Any], keys: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Short keys back to field names, in field order; keys that are no short key follow
    as they were (an unknown key is tolerated, as in any stored data)."""
    out = {long: item[short] for long, short in keys if short in item}
    shorts = {short for _, short in keys}
    for key, value in item.items():
        if key not in shorts:
            out.setdefault(key, value)
    return out


class _ShortLine(msgspec.Struct, frozen=True, kw_only=True, rename=dict(SHORT_LINE_KEYS)):
    """An :class:`~events.types.OrderLine` as short data holds it, with the same checks."""

    product_id: str
    name: str
    quantity: Annotated[int, msgspec.Meta(ge=1)]
    unit_price: Money
    line_total: Money | msgspec.UnsetType = msgspec.UNSET


class _ShortOrderBilled(
    msgspec.Struct, frozen=True, kw_only=True, rename=dict(SHORT_KEYS[("OrderBilled", 2)])
):
    """:class:`~events.types.OrderBilled` (schema 2) as short data holds it: decoding it
    straight into this and building the event takes about half the time of taking the data
    to its full form and decoding that (both give the same event; the tests check it)."""

    account_id: str
    lines: list[_ShortLine]
    total: Money | msgspec.UnsetType = msgspec.UNSET
    currency: Currency = "BRL"
    reserved: bool = False


_short_order_billed = msgspec.json.Decoder(_ShortOrderBilled)


def _decode_short_order_billed(aggregate: str, data: bytes) -> OrderBilled:
    item = _short_order_billed.decode(data)
    lines = [
        OrderLine(
            product_id=x.product_id,
            name=x.name,
            quantity=x.quantity,
            unit_price=x.unit_price,
            line_total=x.quantity * x.unit_price if x.line_total is msgspec.UNSET else x.line_total,
        )
        for x in item.lines
    ]
    return OrderBilled(
        order_id=aggregate.removeprefix("order:"),
        account_id=item.account_id,
        lines=lines,
        total=sum(x.line_total for x in lines) if item.total is msgspec.UNSET else item.total,
        currency=item.currency,
        reserved=item.reserved,
    )


_short_decoders: dict[str, tuple[int, str, bytes, Callable[[str, bytes], Event]]] = {
    "OrderBilled": (2, "order:", b'{"a":', _decode_short_order_billed),
}
"""Type → (schema, aggregate kind, first key, decoder) of the short forms decoded straight
into their event while that schema is the type's current one (else: full form, upcast)."""


_SHORT_ABSENT = {"c": _SHORT_OMITTED["currency"], "r": _SHORT_OMITTED["reserved"]}


def _full_short(
    event_type: str, keys: tuple[tuple[str, str], ...], aggregate: str, data: bytes
) -> bytes:
    """Short ``data`` in its full form: the bytes :func:`encode_data` gives for the event it
    holds, made from the stored bytes and :data:`SHORT_KEYS` alone (no type's defaults), so
    that the audit's payload of an entry never changes. Data that does not fit the form is
    returned as it is (it does not decode either)."""
    kind, id_field = AGGREGATE_ID_FIELDS[event_type]
    if not aggregate.startswith(kind):
        return data
    try:
        item = _raw_decoder.decode(data)
        lines = [
            _long(line if "t" in line else {**line, "t": line["q"] * line["u"]}, SHORT_LINE_KEYS)
            for line in item["l"]
        ]
        total = item["t"] if "t" in item else sum(x["line_total"] for x in lines)
        body = _long({**_SHORT_ABSENT, **item, "l": lines, "t": total}, keys)
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        return data
    return _encoder.encode({"type": event_type, id_field: aggregate[len(kind) :], **body})


def compact_values(
    event_id: str,
    event: Event,
    aggregate: str,
    actor: str,
    correlation: str,
    causation: str,
    source: str,
    *,
    short: bool = True,
) -> list[str]:
    """The values of a compact entry in :data:`COMPACT_FIELDS` order, ``seq`` left out (the
    append function inserts it after ``aggregate``). Only for an ``event_id`` that is a
    UUIDv7 carrying the append's ``at`` (the caller checks). ``data`` is short
    (:data:`SHORT_KEYS`) where the type has a short form, unless ``short`` is false."""
    return [
        event_id,
        type(event).__name__,
        str(type(event).SCHEMA),
        aggregate,
        actor,
        "" if correlation == event_id else correlation,
        causation,
        source,
        ((short and short_data(event, aggregate)) or compact_data(event, aggregate)).decode(),
    ]


def full_values(
    event_id: str,
    event: Event,
    aggregate: str,
    at: str,
    actor: str,
    correlation: str,
    causation: str,
    source: str,
) -> list[str]:
    """The values of a full entry in :data:`FIELDS` order, ``seq`` left out."""
    return [
        event_id,
        type(event).__name__,
        str(type(event).SCHEMA),
        aggregate,
        at,
        actor,
        correlation,
        causation,
        source,
        encode_data(event).decode(),
    ]


def is_compact(fields: Fields) -> bool:
    """Whether an entry is compact (it has no ``at`` field)."""
    return b"at" not in fields and "at" not in fields


def full_fields(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """An entry's fields in the full form, as the writer of full entries would have stored
    them: ``at`` from the id, ``correlation`` filled in, ``data`` tagged. A full entry (and
    one whose id carries no time, which then does not decode either) is returned as it is.
    """
    if not is_compact(fields):
        return fields
    ev_id = fields.get(b"id", b"").decode(errors="replace")
    ms = uuid7_ms(ev_id)
    if ms is None:
        return fields
    out: dict[bytes, bytes] = {}
    for name in _FIELD_KEYS:
        if name == b"at":
            out[name] = format_at(ms_at(ms)).encode()
        elif name == b"correlation":
            out[name] = fields.get(name) or ev_id.encode()
        elif name == b"data" and name in fields:
            event_type = fields.get(b"type", b"").decode(errors="replace")
            aggregate = fields.get(b"aggregate", b"").decode(errors="replace")
            out[name] = full_data(event_type, aggregate, fields[name])
        elif name in fields:
            out[name] = fields[name]
    for name, value in fields.items():
        out.setdefault(name, value)
    return out


def encode(obj: Any) -> bytes:
    """Shared JSON encoder for anything msgspec can encode."""
    return _encoder.encode(obj)


def _text(value: bytes | str | None, entry_id: str, name: str) -> str:
    if value is None:
        raise MalformedEvent(entry_id, f"missing field {name!r}")
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise MalformedEvent(entry_id, f"field {name!r} is not UTF-8") from exc
    return value


def decode_entry(entry_id: bytes | str, fields: Fields, partition: int) -> RecordedEvent:
    """Decode one stream entry, full or compact (see the module docstring), to the same
    envelope; any defect raises :class:`MalformedEvent` with the entry id.

    Fields beyond the envelope are ignored, and unknown keys inside ``data`` are tolerated,
    so older readers keep working when newer writers add things.
    """
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    get = fields.get
    values: list[str] = []
    compact = False
    for name, key in zip(FIELDS, _FIELD_KEYS, strict=True):
        raw = get(key) if key in fields else get(name)  # type: ignore[call-overload]
        if name == "data":
            if raw is None:
                raise MalformedEvent(eid, "missing field 'data'")
            data = raw
        elif name == "at" and raw is None:
            compact = True
            values.append("")
        else:
            values.append(_text(raw, eid, name))
    ev_id, ev_type, schema_s, aggregate, seq_s, at_s, actor, correlation, causation, source = values
    cls = EVENT_TYPES.get(ev_type)
    if cls is None:
        raise MalformedEvent(eid, f"unknown event type {ev_type!r}")
    try:
        schema = int(schema_s)
        seq = int(seq_s)
        if compact:
            ms = uuid7_ms(ev_id)
            if ms is None:
                raise MalformedEvent(
                    eid, "missing field 'at' (and the id is no UUIDv7 to carry it)"
                )
            at = ms_at(ms)
            correlation = correlation or ev_id
        else:
            at = parse_at(at_s)
    except ValueError as exc:
        raise MalformedEvent(eid, f"bad envelope value: {exc}") from exc
    try:
        fast = _short_decoders.get(ev_type) if compact else None
        if compact:
            data = data if isinstance(data, bytes) else data.encode()
        if (
            fast is not None
            and schema == fast[0] == cls.SCHEMA
            and aggregate.startswith(fast[1])
            and data.startswith(fast[2])
        ):
            event = fast[3](aggregate, data)
        else:
            if compact:
                data = full_data(ev_type, aggregate, data)
            if schema == cls.SCHEMA:
                event = _decoder.decode(data)
            elif 0 < schema < cls.SCHEMA:
                raw_data = upcast(ev_type, schema, cls.SCHEMA, _raw_decoder.decode(data))
                event = msgspec.convert(raw_data, Event)
            else:
                raise MalformedEvent(eid, f"{ev_type} schema {schema} is not known here")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MalformedEvent(eid, f"invalid data: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise MalformedEvent(eid, f"cannot upcast {ev_type} v{schema}: {exc!r}") from exc
    if type(event).__name__ != ev_type:
        raise MalformedEvent(eid, f"data is a {type(event).__name__}, envelope says {ev_type}")
    return RecordedEvent(
        entry_id=eid,
        partition=partition,
        id=ev_id,
        type=ev_type,
        schema=cls.SCHEMA,
        aggregate=aggregate,
        seq=seq,
        at=at,
        actor=actor,
        correlation=correlation,
        causation=causation,
        source=source,
        event=event,
        fields=fields,
    )
