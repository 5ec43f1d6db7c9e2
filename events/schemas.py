"""JSON Schema export of the event catalog: the machine-readable contract for producers."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import msgspec

from events.types import EVENT_TYPES

SCHEMA_DIR = Path(__file__).parent / "schemas"


def _normalise(node: Any) -> Any:
    """Clean every ``description`` with ``inspect.cleandoc``.

    msgspec releases disagree on how a docstring becomes a description (0.23 dedents,
    earlier ones keep the indentation), so the checked-in files would depend on the
    installed version. Cleaning them here makes the bytes a function of our code alone.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _normalise(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    return node


def render() -> dict[str, bytes]:
    """File name → pretty JSON Schema, one file per event type (``$defs`` shared inside)."""
    files: dict[str, bytes] = {}
    for name, cls in sorted(EVENT_TYPES.items()):
        schema = _normalise(msgspec.json.schema(cls))
        schema["$id"] = f"https://streamshop.dev/schemas/{name}.v{cls.SCHEMA}.json"
        schema["x-schema-version"] = cls.SCHEMA
        files[f"{name}.json"] = msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"
    return files


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render().items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written
