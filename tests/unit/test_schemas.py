"""The checked-in JSON Schemas (events/schemas/*.json) are what the catalog renders today."""

from __future__ import annotations

from pathlib import Path

import msgspec

from events.schemas import SCHEMA_DIR, render, write
from events.types import EVENT_TYPES


def stale_files(directory: Path) -> list[str]:
    """Schema files that differ from ``render()``, are missing, or name no event type."""
    expected = render()
    present = {path.name for path in directory.glob("*.json")}
    stale = [
        name
        for name, content in expected.items()
        if name not in present or (directory / name).read_bytes() != content
    ]
    return sorted(stale + sorted(present - expected.keys()))


def test_checked_in_schemas_are_up_to_date() -> None:
    stale = stale_files(SCHEMA_DIR)
    assert not stale, (
        f"stale JSON Schemas in events/schemas: {', '.join(stale)}. "
        "Run `streamshop schemas` (or `make schemas`) and commit the result."
    )


def test_staleness_is_detected(tmp_path: Path) -> None:
    write(tmp_path)
    assert stale_files(tmp_path) == []
    (tmp_path / "OrderBilled.json").write_bytes(b"{}\n")
    (tmp_path / "Gone.json").write_bytes(b"{}\n")
    (tmp_path / "ProductDeleted.json").unlink()
    assert stale_files(tmp_path) == ["Gone.json", "OrderBilled.json", "ProductDeleted.json"]


def test_one_schema_per_event_type_with_its_version() -> None:
    files = render()
    assert set(files) == {f"{name}.json" for name in EVENT_TYPES}
    order = msgspec.json.decode(files["OrderBilled.json"])
    assert order["x-schema-version"] == EVENT_TYPES["OrderBilled"].SCHEMA
    assert order["$id"].endswith("OrderBilled.v2.json")


def test_descriptions_do_not_depend_on_how_msgspec_dedents_docstrings() -> None:
    from events.schemas import _normalise

    indented = {"$defs": {"A": {"description": "Line one.\n\n    Line two,\n    three."}}}
    dedented = {"$defs": {"A": {"description": "Line one.\n\nLine two,\nthree."}}}
    assert _normalise(indented) == _normalise(dedented) == dedented
    assert _normalise({"properties": [{"description": "  x"}]}) == {
        "properties": [{"description": "x"}]
    }
