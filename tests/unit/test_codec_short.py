"""Short data (events.codec.SHORT_KEYS): one test per rule, and every older form of the same
event decoding to what the short form decodes to, without a store."""

from __future__ import annotations

import msgspec
import pytest

from events.codec import (
    AGGREGATE_ID_FIELDS,
    COMPACT_FIELDS,
    FIELDS,
    SHORT_KEYS,
    SHORT_LINE_KEYS,
    compact_data,
    compact_values,
    decode_entry,
    encode_data,
    full_data,
    full_fields,
    short_data,
    short_keys,
)
from events.errors import MalformedEvent
from events.types import EVENT_TYPES, OrderBilled, OrderLine

AT = "2026-11-23T20:00:00.123Z"
ID = "01a209fe-727b-7000-8000-000000000001"
"""A UUIDv7 whose millisecond is :data:`AT`."""
AGGREGATE = "order:o1"


def line(quantity: int = 2, unit_price: int = 5, line_total: int | None = None) -> OrderLine:
    total = quantity * unit_price if line_total is None else line_total
    return OrderLine(
        product_id="p1", name="Café", quantity=quantity, unit_price=unit_price, line_total=total
    )


def order(**overrides: object) -> OrderBilled:
    fields: dict[str, object] = {
        "order_id": "o1",
        "account_id": "a1",
        "lines": [line()],
        "total": 10,
        **overrides,
    }
    return OrderBilled(**fields)  # type: ignore[arg-type]


def short(event: OrderBilled) -> bytes:
    data = short_data(event, event.aggregate())
    assert data is not None
    return data


def entry(data: bytes, *, full: bool = False) -> dict[bytes, bytes]:
    """The stream fields of an entry holding ``data`` (compact, or full with ``at``)."""
    fields = {
        "id": ID,
        "type": "OrderBilled",
        "schema": "2",
        "aggregate": AGGREGATE,
        "seq": "1",
        **({"at": AT} if full else {}),
        "actor": "account:a1",
        "correlation": ID if full else "",
        "causation": "",
        "source": "api",
        "data": data,
    }
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


# -- the rules, one by one -------------------------------------------------------------------


def test_an_order_billed_is_stored_under_short_keys_without_its_order_id() -> None:
    assert short(order()) == b'{"a":"a1","l":[{"p":"p1","n":"Caf\xc3\xa9","q":2,"u":5}]}'


def test_a_line_total_that_is_quantity_times_price_is_left_out() -> None:
    assert b'"t"' not in short(order(lines=[line(3, 7)], total=21))


def test_a_line_total_that_is_not_quantity_times_price_is_kept() -> None:
    data = short(order(lines=[line(2, 5, line_total=9)], total=9))
    assert b'"u":5,"t":9}]' in data


def test_a_total_that_is_the_sum_of_the_lines_is_left_out() -> None:
    data = short(order(lines=[line(2, 5), line(1, 3)], total=13))
    assert not data.endswith(b',"t":13}')


def test_a_total_that_is_not_the_sum_of_the_lines_is_kept() -> None:
    assert short(order(total=7)).endswith(b'}],"t":7}')


def test_the_default_currency_is_left_out_and_another_kept() -> None:
    assert b'"c"' not in short(order(currency="BRL"))
    assert short(order(currency="USD")).endswith(b'}],"c":"USD"}')


def test_reserved_is_left_out_when_false_and_kept_when_true() -> None:
    assert b'"r"' not in short(order(reserved=False))
    assert short(order(reserved=True)).endswith(b'}],"r":true}')


def test_an_order_whose_aggregate_does_not_hold_its_id_keeps_the_older_compact_data() -> None:
    event = order()
    assert short_data(event, "order:other") is None
    values = compact_values(ID, event, "order:other", "a", "", "", "api")
    assert values[-1].encode() == compact_data(event, "order:other")
    assert values[-1].startswith('{"order_id":"o1",')


def test_a_type_without_a_short_form_keeps_the_older_compact_data() -> None:
    event = EVENT_TYPES["ProductDeleted"](product_id="p1")  # type: ignore[call-arg]
    assert short_data(event, event.aggregate()) is None
    values = compact_values(ID, event, event.aggregate(), "a", "", "", "api")
    assert values[-1].encode() == compact_data(event, event.aggregate())


def test_the_writer_gives_short_data_unless_told_not_to() -> None:
    event = order()
    assert compact_values(ID, event, AGGREGATE, "a", "", "", "api")[-1].encode() == short(event)
    first = compact_values(ID, event, AGGREGATE, "a", "", "", "api", short=False)[-1]
    assert first.encode() == compact_data(event, AGGREGATE)


# -- every form reads the same ---------------------------------------------------------------

VARIANTS = [
    order(),
    order(lines=[line(2, 5), line(1, 1290)], total=1300),
    order(lines=[line(2, 5, line_total=8)], total=8),  # a discounted line
    order(total=3),  # a total that is not the lines' sum
    order(currency="USD", reserved=True),
    order(lines=[]),
    order(account_id='a"\u00e9\U0001f680', lines=[line(1, 0)], total=0),
]


@pytest.mark.parametrize("event", VARIANTS)
def test_full_first_compact_and_short_entries_decode_to_the_same_event(event: OrderBilled) -> None:
    full = entry(encode_data(event), full=True)
    first = entry(compact_data(event, AGGREGATE))
    new = entry(short(event))
    assert [k.decode() for k in full] == list(FIELDS)
    assert [k.decode() for k in new] == list(COMPACT_FIELDS) == [k.decode() for k in first]
    decoded = [decode_entry("1-0", fields, partition=0) for fields in (full, first, new)]
    for rec in decoded:
        assert rec.event == event
        assert (rec.at, rec.correlation, rec.aggregate) == (decoded[0].at, ID, AGGREGATE)
    assert decoded[2].fields is new  # the audit hashes the entry as stored


@pytest.mark.parametrize("event", VARIANTS)
def test_short_data_in_its_full_form_is_the_full_entrys_data(event: OrderBilled) -> None:
    assert full_data("OrderBilled", AGGREGATE, short(event)) == encode_data(event)
    assert full_fields(entry(short(event))) == entry(encode_data(event), full=True)


@pytest.mark.parametrize("event", VARIANTS)
def test_the_direct_decoder_and_the_full_form_agree(event: OrderBilled) -> None:
    """decode_entry takes short data straight to the event; the full form it would give
    decodes to the same one."""
    via_full = msgspec.json.decode(
        full_data("OrderBilled", AGGREGATE, short(event)), type=OrderBilled
    )
    assert decode_entry("1-0", entry(short(event)), partition=0).event == via_full == event


def test_the_full_form_of_short_data_is_made_of_the_stored_bytes_alone() -> None:
    """Keys the form does not know are kept (after the fields, as stored), and the payload
    the audit records is the same whatever defaults the event type has today."""
    data = b'{"a":"a1","l":[{"p":"p1","n":"x","q":1,"u":2,"z":0}],"new":1}'
    assert full_data("OrderBilled", AGGREGATE, data) == (
        b'{"type":"OrderBilled","order_id":"o1","account_id":"a1","lines":[{"product_id":"p1",'
        b'"name":"x","quantity":1,"unit_price":2,"line_total":2,"z":0}],"total":2,'
        b'"currency":"BRL","reserved":false,"new":1}'
    )


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":"a1","l":[{"p":"p1","n":"x","q":0,"u":2}]}',  # quantity below 1
        b'{"a":"a1","l":[{"p":"p1","n":"x","q":1,"u":2,"t":null}]}',
        b'{"a":"a1","l":"nope"}',
        b'{"a":"a1"}',
        b'{"a":"a1","l":[{"p":"p1","n":"x","q":1,"u":2}],"c":"brl"}',
        b'{"a":',
    ],
)
def test_broken_short_data_is_a_named_decode_error_both_ways(data: bytes) -> None:
    with pytest.raises(MalformedEvent, match="invalid data") as caught:
        decode_entry("9-1", entry(data), partition=0)
    assert caught.value.entry_id == "9-1"
    with pytest.raises(msgspec.DecodeError):  # the full form does not decode either
        msgspec.json.decode(full_data("OrderBilled", AGGREGATE, data), type=OrderBilled)


def test_an_older_compact_entry_is_not_taken_for_short_data() -> None:
    for event in VARIANTS:
        assert short_keys("OrderBilled", compact_data(event, AGGREGATE)) is None
        assert short_keys("OrderBilled", compact_data(event, "order:other")) is None
        assert short_keys("OrderBilled", short(event)) is not None


# -- the table -------------------------------------------------------------------------------


def test_each_short_form_names_its_types_fields_in_order() -> None:
    """Part of the stored format: the fields after the aggregate's id, each once, in the
    order msgspec writes them, under a key that is no field name of the type (so short data
    is known by its first key), and the first one required (so it is always there)."""
    for (name, schema), keys in SHORT_KEYS.items():
        cls = EVENT_TYPES[name]
        assert cls.SCHEMA == schema, name
        fields = msgspec.structs.fields(cls)
        assert fields[0].encode_name == AGGREGATE_ID_FIELDS[name][1]
        assert tuple(long for long, _ in keys) == tuple(f.encode_name for f in fields[1:])
        shorts = [s for _, s in keys]
        assert len(set(shorts)) == len(shorts)
        assert not set(shorts) & {f.encode_name for f in fields}
        assert fields[1].required
    line_fields = msgspec.structs.fields(OrderLine)
    assert tuple(long for long, _ in SHORT_LINE_KEYS) == tuple(f.encode_name for f in line_fields)


def test_a_type_whose_fields_no_longer_match_its_short_form_is_not_written_short() -> None:
    from events.codec import _fields_match

    class Grown(OrderBilled, frozen=True, kw_only=True, tag="OrderBilled"):
        coupon: str = ""

    keys = SHORT_KEYS[("OrderBilled", 2)]
    assert _fields_match(OrderBilled, keys)
    assert not _fields_match(Grown, keys)
