"""The audit hash input must stay byte for byte what it always was, or old chains break."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec

from events.codec import RecordedEvent
from events.ids import format_at
from events.types import AccountCreated, OrderBilled, OrderLine, ProductUpdated
from projections.audit import GENESIS, canonical, row_of


def reference(row: dict[str, Any]) -> bytes:
    """The original definition of the hashed form."""
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


AWKWARD = 'Açaí "quoted" \\ back\nline\ttab \x00\x1f\x7f é 中文 😀 \u2028\u2029 </script>'


def recorded(event: Any, n: int) -> RecordedEvent:
    return RecordedEvent(
        entry_id=f"1700000000000-{n}",
        partition=3,
        id=f"ev-{n}",
        type=type(event).__name__,
        schema=2 if isinstance(event, OrderBilled) else 1,
        aggregate=event.aggregate(),
        seq=n,
        at=datetime(2026, 11, 23, 20, 0, 0, 123456, tzinfo=UTC),
        actor=AWKWARD,
        correlation="c-ü",
        causation="",
        source="api",
        event=event,
    )


def test_the_hashed_form_is_the_original_json_for_every_kind_of_value() -> None:
    events = [
        AccountCreated(account_id="a", email="ana@example.com", name=AWKWARD, password_hash="x"),
        ProductUpdated(product_id="p", name=AWKWARD, price=2**62, description=None),
        OrderBilled(
            order_id="o",
            account_id="a",
            lines=[OrderLine(product_id="p", name=AWKWARD, quantity=3, unit_price=0, line_total=0)],
            total=0,
        ),
    ]
    prev = GENESIS
    for n, event in enumerate(events, start=1):
        row = row_of(recorded(event, n), n, prev)
        assert canonical(row) == reference(row)
        stored = dict(row, payload=json.loads(msgspec.json.encode(row["payload"])))
        assert canonical(stored) == reference(stored)  # as verify reads it back
        prev = row["hash"]


def test_a_payload_with_a_float_takes_the_reference_path() -> None:
    row = row_of(
        recorded(AccountCreated(account_id="a", email="e", name="n", password_hash="x"), 1),
        1,
        GENESIS,
    )
    row = dict(row, type="SomethingNew", payload={"ratio": 1e16, "x": [0.1]})
    assert canonical(row) == reference(row)
