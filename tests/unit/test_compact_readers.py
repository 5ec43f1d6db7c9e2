"""Readers that show an entry's stored fields (the API's event feed, the lake) show a
compact entry in its full form: the same whichever form the entry was written in."""

from __future__ import annotations

import msgspec

from app.controllers.feed import message
from tests.unit.test_codec import CASES, full_and_compact
from workers.export import entry_row


def test_a_compact_entry_and_its_full_form_make_the_same_feed_message() -> None:
    for event_type, aggregate, full_data, compact_data in CASES:
        full, compact = full_and_compact(event_type, aggregate, full_data, compact_data)
        old = msgspec.json.decode(message(0, "1-0", full, "0-1-0"))
        new = msgspec.json.decode(message(0, "1-0", compact, "0-1-0"))
        assert new == old, event_type
        assert new["at"] == "2026-11-23T20:00:00.123Z" and new["data"]["type"] == event_type


def test_a_compact_entry_and_its_full_form_make_the_same_lake_row() -> None:
    for event_type, aggregate, full_data, compact_data in CASES:
        full, compact = full_and_compact(event_type, aggregate, full_data, compact_data)
        assert entry_row("1-0", compact, 0) == entry_row("1-0", full, 0), event_type
