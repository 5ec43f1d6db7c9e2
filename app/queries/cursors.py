"""Opaque keyset cursors: base64url JSON of the last item's sort key and id.

A cursor names where the previous page ended, so pages stay exact while items are added;
it carries the sort it was made for and is refused under another one.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import msgspec
from litestar.exceptions import ValidationException


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    sort: str
    value: Any
    id: str


def encode_cursor(sort: str, value: Any, item_id: str) -> str:
    if isinstance(value, datetime):
        value = {"dt": value.isoformat()}
    raw = msgspec.json.encode(Cursor(sort, value, item_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, sort: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = msgspec.json.decode(raw, type=Cursor)
        value = cursor.value
        if isinstance(value, dict):
            value = datetime.fromisoformat(value["dt"])
        elif value is not None and not isinstance(value, str | int):
            raise ValueError("bad value")
    except (binascii.Error, msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
        raise bad_param("cursor", "not a cursor this API issued") from exc
    if cursor.sort != sort:
        raise bad_param("cursor", f"the cursor was made for sort={cursor.sort!r}")
    return Cursor(cursor.sort, value, cursor.id)


def bad_param(name: str, reason: str) -> ValidationException:
    """A 400 problem naming the query parameter at fault."""
    return ValidationException(detail=f"{name}: {reason}", extra=[{"key": name, "message": reason}])


def after(field: str, descending: bool, cursor: Cursor) -> dict[str, Any]:
    """MongoDB filter: items strictly after ``cursor`` in ``(field, _id)`` order."""
    op = "$lt" if descending else "$gt"
    return {"$or": [{field: {op: cursor.value}}, {field: cursor.value, "_id": {op: cursor.id}}]}
