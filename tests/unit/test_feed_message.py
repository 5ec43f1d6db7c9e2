"""The API's event feed shows a compact entry in its full form: a client sees the same
message whichever form the entry was written in."""

from __future__ import annotations

import msgspec

from app.controllers.feed import message
from tests.unit.test_codec import CASES, full_and_compact


def test_a_compact_entry_and_its_full_form_make_the_same_feed_message() -> None:
    for event_type, aggregate, full_data, compact_data in CASES:
        full, compact = full_and_compact(event_type, aggregate, full_data, compact_data)
        old = msgspec.json.decode(message(0, "1-0", full, "0-1-0"))
        new = msgspec.json.decode(message(0, "1-0", compact, "0-1-0"))
        assert new == old, event_type
        assert new["at"] == "2026-11-23T20:00:00.123Z" and new["data"]["type"] == event_type
