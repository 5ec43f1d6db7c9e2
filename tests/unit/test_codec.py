"""The one codec: events to stream fields and back, without a store."""

from __future__ import annotations

import msgspec
import pytest

from events.codec import FIELDS, decode_entry, encode_data
from events.errors import MalformedEvent
from events.ids import uuid7
from events.types import AccountCreated, OrderBilled, OrderLine, ProductCreated


def entry(event_type: str, data: bytes, schema: int, **overrides: str) -> dict[bytes, bytes]:
    """Stream fields as redis-py returns them (bytes), in the envelope's order."""
    fields = {
        "id": uuid7(),
        "type": event_type,
        "schema": str(schema),
        "aggregate": "order:o1",
        "seq": "1",
        "at": "2026-11-23T20:00:00.123Z",
        "actor": "account:a1",
        "correlation": "c1",
        "causation": "",
        "source": "api",
        "data": data,
        **overrides,
    }
    return {k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in fields.items()}


def test_unicode_round_trips_through_the_codec() -> None:
    event = AccountCreated(
        account_id=uuid7(),
        email="zoë.ñandú@exämple.com",
        name='Zoë Ñandú 東京 🚀 \u200b"quoted"\n',
        password_hash="$argon2id$…",
    )
    schema = AccountCreated.SCHEMA
    fields = entry("AccountCreated", encode_data(event), schema, aggregate=event.aggregate())
    decoded = decode_entry(b"1-0", fields, partition=3)
    assert decoded.event == event
    assert (decoded.entry_id, decoded.partition, decoded.aggregate) == ("1-0", 3, event.aggregate())


def test_decoded_envelope_carries_every_field() -> None:
    event = ProductCreated(product_id="p1", sku="S-1", name="Pão de queijo", price=450)
    fields = entry("ProductCreated", encode_data(event), 1, seq="7", causation="e0")
    decoded = decode_entry("5-2", fields, partition=0)
    assert decoded.seq == 7 and decoded.causation == "e0" and decoded.source == "api"
    assert decoded.at.isoformat() == "2026-11-23T20:00:00.123000+00:00"
    assert decoded.position == "0-5-2"
    assert [k.decode() for k in fields] == list(FIELDS)


def test_a_v1_order_billed_entry_is_upcast_to_v2_on_decode() -> None:
    v1 = (
        b'{"type":"OrderBilled","order_id":"o1","account_id":"a1","total":3980,'
        b'"lines":[{"product_id":"p1","name":"Caf\xc3\xa9","quantity":2,"price":1990}]}'
    )
    decoded = decode_entry("1-0", entry("OrderBilled", v1, schema=1), partition=0)
    assert decoded.schema == OrderBilled.SCHEMA == 2
    assert decoded.event == OrderBilled(
        order_id="o1",
        account_id="a1",
        total=3980,
        lines=[
            OrderLine(product_id="p1", name="Café", quantity=2, unit_price=1990, line_total=3980)
        ],
    )


def test_a_current_order_billed_entry_is_not_upcast() -> None:
    line = OrderLine(product_id="p1", name="x", quantity=1, unit_price=5, line_total=5)
    event = OrderBilled(order_id="o1", account_id="a1", lines=[line], total=5)
    decoded = decode_entry("1-0", entry("OrderBilled", encode_data(event), 2), partition=0)
    assert decoded.event == event


def test_unknown_fields_in_data_and_envelope_are_tolerated() -> None:
    data = b'{"type":"ProductDeleted","product_id":"p1","reason_added_later":{"x":[1,2]}}'
    fields = entry("ProductDeleted", data, 1) | {b"trace": b"abc"}
    decoded = decode_entry("1-0", fields, partition=0)
    assert decoded.event.product_id == "p1"  # type: ignore[union-attr]


def test_a_schema_newer_than_the_reader_is_a_named_decode_error() -> None:
    data = b'{"type":"ProductDeleted","product_id":"p1"}'
    with pytest.raises(MalformedEvent, match="schema 9") as caught:
        decode_entry("4-2", entry("ProductDeleted", data, 9), partition=0)
    assert caught.value.entry_id == "4-2"


def test_a_v1_entry_that_cannot_be_upcast_is_a_named_decode_error() -> None:
    broken = b'{"type":"OrderBilled","order_id":"o1","account_id":"a1","total":1,"lines":[{}]}'
    with pytest.raises(MalformedEvent, match="upcast") as caught:
        decode_entry(b"8-0", entry("OrderBilled", broken, 1), partition=0)
    assert caught.value.entry_id == "8-0"


def test_data_of_another_type_than_the_envelope_says_is_rejected() -> None:
    data = b'{"type":"ProductDeleted","product_id":"p1"}'
    with pytest.raises(MalformedEvent, match="envelope says StockAdjusted"):
        decode_entry("1-0", entry("StockAdjusted", data, 1), partition=0)


def test_encode_data_is_json_tagged_with_the_type() -> None:
    event = ProductCreated(product_id="p1", sku="S", name="n", price=1)
    assert msgspec.json.decode(encode_data(event))["type"] == "ProductCreated"


# -- the compact form (no ``at``, correlation "" for the id, data without tag and aggregate id)

ENVELOPE = ("id", "type", "schema", "aggregate", "seq", "at", "actor", "correlation", "causation")
AT = "2026-11-23T20:00:00.123Z"
ID = "01a209fe-727b-7000-8000-000000000001"
"""A UUIDv7 whose millisecond is :data:`AT` (0x01a209fe727b = 1_795_464_000_123)."""


def as_bytes(fields: dict[str, str | bytes]) -> dict[bytes, bytes]:
    return {k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in fields.items()}


def full_and_compact(
    event_type: str, aggregate: str, full_data: bytes, compact_data: bytes, correlation: str = ID
) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """One event as the full writer stored it and as the compact writer stores it."""
    full = {
        "id": ID,
        "type": event_type,
        "schema": "2" if event_type == "OrderBilled" else "1",
        "aggregate": aggregate,
        "seq": "3",
        "at": AT,
        "actor": "account:a1",
        "correlation": correlation,
        "causation": "e0",
        "source": "api",
        "data": full_data,
    }
    compact = {k: v for k, v in full.items() if k != "at"}
    compact["correlation"] = "" if correlation == ID else correlation
    compact["data"] = compact_data
    return as_bytes(full), as_bytes(compact)


CASES = [
    (
        "OrderBilled",
        "order:o1",
        b'{"type":"OrderBilled","order_id":"o1","account_id":"a1","lines":[{"product_id":"p1",'
        b'"name":"Caf\xc3\xa9","quantity":2,"unit_price":5,"line_total":10}],"total":10,'
        b'"currency":"BRL","reserved":false}',
        b'{"account_id":"a1","lines":[{"product_id":"p1","name":"Caf\xc3\xa9","quantity":2,'
        b'"unit_price":5,"line_total":10}],"total":10,"currency":"BRL",'
        b'"reserved":false}',
    ),
    # the aggregate is not the first field: the field stays in the data
    (
        "LoginSucceeded",
        "login:d1",
        b'{"type":"LoginSucceeded","account_id":"a1","email_digest":"d1"}',
        b'{"account_id":"a1","email_digest":"d1"}',
    ),
    # the aggregate's id, with a character JSON escapes, leaves the data
    (
        "CategoryDeleted",
        'category:caf"e',
        b'{"type":"CategoryDeleted","slug":"caf\\"e","parent":null}',
        b'{"parent":null}',
    ),
]


@pytest.mark.parametrize(("event_type", "aggregate", "full_data", "compact_data"), CASES)
def test_a_compact_entry_decodes_to_the_envelope_of_its_full_form(
    event_type: str, aggregate: str, full_data: bytes, compact_data: bytes
) -> None:
    full, compact = full_and_compact(event_type, aggregate, full_data, compact_data)
    old = decode_entry("1-0", full, partition=0)
    new = decode_entry("2-0", compact, partition=0)
    for name in ENVELOPE:
        assert getattr(new, name) == getattr(old, name), name
    assert (new.source, new.event) == (old.source, old.event)
    assert new.at.isoformat() == "2026-11-23T20:00:00.123000+00:00" and new.correlation == ID
    assert new.fields is compact  # the audit hashes the entry as stored


@pytest.mark.parametrize(("event_type", "aggregate", "full_data", "compact_data"), CASES)
def test_the_writer_stores_the_compact_form_and_full_fields_gives_the_full_one_back(
    event_type: str, aggregate: str, full_data: bytes, compact_data: bytes
) -> None:
    from events.codec import compact_data as encode_compact
    from events.codec import compact_values, full_fields

    full, compact = full_and_compact(event_type, aggregate, full_data, compact_data)
    event = decode_entry("1-0", full, partition=0).event
    assert encode_data(event) == full_data
    assert encode_compact(event, aggregate) == compact_data
    values = compact_values(ID, event, aggregate, "account:a1", ID, "e0", "api", short=False)
    values.insert(4, "3")  # seq: the append function puts it after aggregate
    assert as_bytes(dict(zip((k.decode() for k in compact), values, strict=True))) == compact
    assert full_fields(compact) == full


def test_a_compact_correlation_is_kept_unless_it_is_the_id() -> None:
    full, compact = full_and_compact("LoginSucceeded", "login:d1", *CASES[1][2:], correlation="r9")
    assert compact[b"correlation"] == b"r9"
    assert decode_entry("2-0", compact, partition=0).correlation == "r9"
    old = {**full, b"correlation": b""}
    assert decode_entry("1-0", old, partition=0).correlation == ""


def test_a_compact_entry_whose_id_carries_no_time_is_a_named_decode_error() -> None:
    _, compact = full_and_compact("LoginSucceeded", "login:d1", *CASES[1][2:])
    compact[b"id"] = b"c8a1e7a4-6f1f-4d43-9a55-0d8d2b4c7a10"  # a UUIDv4
    with pytest.raises(MalformedEvent, match="missing field 'at'") as caught:
        decode_entry("9-1", compact, partition=0)
    assert caught.value.entry_id == "9-1"


def test_a_uuid7_carries_the_millisecond_it_is_given() -> None:
    from events.ids import at_ms, parse_at, uuid7_ms

    ms = at_ms(parse_at(AT))
    assert uuid7_ms(ID) == ms == 1_795_464_000_123
    assert uuid7_ms(uuid7(ms)) == ms
    assert uuid7_ms(ID.upper()) is None
    assert uuid7_ms("c8a1e7a4-6f1f-4d43-9a55-0d8d2b4c7a10") is None
    assert uuid7_ms("not an id") is None


def test_the_types_whose_compact_data_leaves_out_the_aggregate_id_are_as_the_types_say() -> None:
    """The table is part of the stored format: a listed type must keep its aggregate's id as
    its first field (old compact entries are completed with it), and a type that could join
    should be added deliberately."""
    from events.codec import AGGREGATE_ID_FIELDS, aggregate_id_field
    from events.types import EVENT_TYPES

    for name, spec in AGGREGATE_ID_FIELDS.items():
        assert aggregate_id_field(EVENT_TYPES[name]) == spec, name
    could = {n for n, cls in EVENT_TYPES.items() if aggregate_id_field(cls) is not None}
    assert could == set(AGGREGATE_ID_FIELDS)
    assert "LoginSucceeded" not in could  # its aggregate is its second field
