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
