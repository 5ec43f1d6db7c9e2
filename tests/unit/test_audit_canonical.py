"""The audit hash input must stay byte for byte what it is documented to be, or chains break.

Format 2 (every new row) hashes the entry's fields as stored; format 1 (rows written before)
hashed the decoded event and must keep verifying by its own rule.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import msgspec

from events.codec import FIELDS, decode_entry, encode_data, undecodable
from events.errors import MalformedEvent
from events.ids import format_at
from events.types import AccountCreated, OrderBilled, OrderLine, ProductUpdated
from projections.audit import (
    GENESIS,
    canonical_v1,
    parse_stored,
    payload_json,
    row_fault,
    row_of,
    stored_fields,
)


def reference_v1(row: dict[str, Any]) -> bytes:
    """The original definition of the hashed form (format 1)."""
    body = {
        "partition": row["partition"],
        "n": row["n"],
        "entry_id": row["entry_id"],
        "event_id": row["event_id"],
        "type": row["type"],
        "schema": row["schema_version"],
        "aggregate": row["aggregate"],
        "seq": row["seq"],
        "actor": row["actor"],
        "source": row["source"],
        "correlation": row["correlation"],
        "causation": row["causation"],
        "occurred_at": format_at(row["occurred_at"]),
        "payload": row["payload"],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ns(value: bytes) -> bytes:
    return str(len(value)).encode() + b":" + value + b","


def reference_record(partition: int, n: int, entry_id: str, fields: dict[bytes, bytes]) -> bytes:
    """The documented format-2 record, written out independently of the implementation."""
    names = [name.encode() for name in FIELDS]
    order = [k for k in names if k in fields] + sorted(k for k in fields if k not in names)
    stored = b""
    for name in order:
        value = fields[name]
        if name == b"data":
            value = b"sha256:" + hashlib.sha256(value).hexdigest().encode()
        stored += ns(name) + ns(value)
    data = json.loads(fields[b"data"])
    data.pop("password_hash", None)
    payload = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b"".join(
        ns(part)
        for part in (
            b"streamshop-audit-2",
            str(partition).encode(),
            str(n).encode(),
            entry_id.encode(),
            stored,
            payload.encode(),
        )
    )


AWKWARD = 'Açaí "quoted" \\ back\nline\ttab \x00\x1f\x7f é 中文 😀 \u2028\u2029 </script>'


def events(name: str) -> list[Any]:
    return [
        AccountCreated(account_id="a", email="ana@example.com", name=name, password_hash="x"),
        ProductUpdated(product_id="p", name=name, price=2**62, description=None),
        OrderBilled(
            order_id="o",
            account_id="a",
            lines=[OrderLine(product_id="p", name=name, quantity=3, unit_price=0, line_total=0)],
            total=0,
        ),
    ]


EVENTS = events(AWKWARD.replace("\x00", ""))
"""PostgreSQL's jsonb cannot hold NUL (such a payload is kept as ``{}``); the envelope can."""


def stored_entry(event: Any, n: int, **override: bytes) -> dict[bytes, bytes]:
    """An entry's fields as Redis returns them."""
    values = {
        "id": f"ev-{n}",
        "type": type(event).__name__,
        "schema": str(type(event).SCHEMA),
        "aggregate": event.aggregate(),
        "seq": str(n),
        "at": "2026-11-23T20:00:00.123Z",
        "actor": AWKWARD,
        "correlation": "c-ü",
        "causation": "",
        "source": "api",
    }
    fields = {k.encode(): v.encode() for k, v in values.items()}
    fields[b"data"] = encode_data(event)
    fields.update({k.encode(): v for k, v in override.items()})
    return fields


def test_the_format_2_record_is_the_documented_netstrings_of_the_stored_bytes() -> None:
    prev = GENESIS
    for n, event in enumerate(EVENTS, start=1):
        fields = stored_entry(event, n)
        row = row_of(decode_entry(f"1700000000000-{n}", fields, 3), n, prev)
        expected = reference_record(3, n, f"1700000000000-{n}", fields)
        assert row["hash"] == hashlib.sha256(prev.encode() + expected).hexdigest()
        assert row_fault(row, prev) is None
        assert row_fault(dict(row, actor="mallory"), prev) == (
            "actor does not match the stored entry"
        )
        assert row_fault(dict(row, payload='{"total":1}'), prev) == (
            "hash does not match the row's contents"
        )
        assert row_fault(dict(row, stored=row["stored"] + b"1:x,1:y,"), prev) == (
            "hash does not match the row's contents"
        )
        prev = row["hash"]


def test_field_order_and_text_or_bytes_keys_do_not_change_the_hash() -> None:
    fields = stored_entry(EVENTS[2], 1, extra=b"\xff\x00 kept")
    shuffled = dict(reversed(list(fields.items())))
    a = row_of(decode_entry("1-1", fields, 0), 1, GENESIS)
    b = row_of(decode_entry("1-1", shuffled, 0), 1, GENESIS)
    assert a["hash"] == b["hash"]
    assert parse_stored(a["stored"])[b"extra"] == b"\xff\x00 kept"
    assert (
        row_of(decode_entry("1-1", {**fields, b"actor": b"x"}, 0), 1, GENESIS)["hash"]
        != (a["hash"])
    )
    plain = stored_entry(EVENTS[2], 1)
    as_text = {k.decode(): v.decode() for k, v in plain.items()}
    assert stored_fields(as_text)[0] == stored_fields(plain)[0]
    assert stored_fields(as_text)[0] == stored_fields(dict(reversed(plain.items())))[0]


def test_no_secret_reaches_the_row_though_its_bytes_are_hashed() -> None:
    fields = stored_entry(
        AccountCreated(account_id="a", email="e", name="n", password_hash="$argon2id$s"), 1
    )
    row = row_of(decode_entry("1-1", fields, 0), 1, GENESIS)
    assert b"argon2" not in row["stored"] and "argon2" not in row["payload"]
    other = {**fields, b"data": fields[b"data"].replace(b"$argon2id$s", b"$argon2id$t")}
    assert row_of(decode_entry("1-1", other, 0), 1, GENESIS)["hash"] != row["hash"]


def test_an_undecodable_entry_gets_a_row_from_the_same_bytes() -> None:
    fields = stored_entry(EVENTS[1], 1, type=b"StockRecounted")
    try:
        decode_entry("5-0", fields, 2)
    except MalformedEvent as exc:
        entry = undecodable("5-0", fields, 2, exc)
    row = row_of(entry, 1, GENESIS)
    assert row["undecodable"] and "unknown event type" in row["error"]
    assert row["event_id"] == "undecodable:2:5-0" and row["type"] == "StockRecounted"
    assert (
        row["hash"]
        == hashlib.sha256(GENESIS.encode() + reference_record(2, 1, "5-0", fields)).hexdigest()
    )
    assert row_fault(row, GENESIS) is None


def test_the_payload_reads_back_as_it_was_hashed() -> None:
    cases = [
        b'{"a":1e16,"b":[0.1,2.0,-0.0],"c":"x"}',
        b'{"big":123456789012345678901234567890,"f":1.5}',
        b'{"nan":NaN}',
        b"not json at all",
        b"[1,2,3]",
        b'{"password_hash":"secret"',
        b'{"nul":"\\u0000"}',
        b"\xff\xfe",
        msgspec.json.encode({"name": AWKWARD, "n": 2**62}),
    ]
    for data in cases:
        text = payload_json(data)
        assert payload_json(text.encode()) == text, data
        assert "secret" not in text
    assert payload_json(b'{"a":1e16}') == '{"a":10000000000000000}'
    assert payload_json(b'{"nul":"\\u0000"}') == "{}"


def test_the_format_1_form_is_the_original_json_for_every_kind_of_value() -> None:
    prev = GENESIS
    for n, event in enumerate(events(AWKWARD), start=1):
        payload = msgspec.to_builtins(event)
        payload.pop("password_hash", None)
        row = {
            "partition": 3,
            "n": n,
            "entry_id": f"1700000000000-{n}",
            "event_id": f"ev-{n}",
            "type": type(event).__name__,
            "schema_version": type(event).SCHEMA,
            "aggregate": event.aggregate(),
            "seq": n,
            "actor": AWKWARD,
            "source": "api",
            "correlation": "c-ü",
            "causation": "",
            "occurred_at": datetime(2026, 11, 23, 20, 0, 0, 123456, tzinfo=UTC),
            "payload": payload,
        }
        assert canonical_v1(row) == reference_v1(row)
        stored = dict(row, payload=json.loads(msgspec.json.encode(row["payload"])))
        assert canonical_v1(stored) == reference_v1(stored)  # as verify reads it back
        row["hash"] = hashlib.sha256(prev.encode() + reference_v1(row)).hexdigest()
        legacy = dict(row, hash_format=1, payload=msgspec.json.encode(payload).decode())
        assert row_fault(legacy, prev) is None
        assert row_fault(dict(legacy, actor="mallory"), prev) is not None
        prev = row["hash"]


def test_a_format_1_payload_with_a_float_takes_the_reference_path() -> None:
    row = {
        "partition": 0,
        "n": 1,
        "entry_id": "1-1",
        "event_id": "e",
        "type": "SomethingNew",
        "schema_version": 1,
        "aggregate": "x:1",
        "seq": 1,
        "actor": "a",
        "source": "api",
        "correlation": "",
        "causation": "",
        "occurred_at": datetime(2026, 11, 23, tzinfo=UTC),
        "payload": {"ratio": 1e16, "x": [0.1]},
    }
    assert canonical_v1(row) == reference_v1(row)


def test_a_decoder_fix_does_not_change_the_hash_of_an_entry_recorded_raw() -> None:
    """An entry a projector could not decode (say, written by a newer release during a
    rolling upgrade) and the same entry decoded after the fix hash the same."""
    fields = stored_entry(EVENTS[1], 4)
    raw = row_of(undecodable("9-0", fields, 1, MalformedEvent("9-0", "not known here")), 4, GENESIS)
    decoded = row_of(decode_entry("9-0", fields, 1), 4, GENESIS)
    assert raw["hash"] == decoded["hash"] and raw["payload"] == decoded["payload"]
    assert (raw["undecodable"], decoded["undecodable"]) == (True, False)
    assert decoded["event_id"] == "ev-4" != raw["event_id"]
