"""Strict request bodies: a wrong JSON type is a 400, never silently coerced.

Litestar converts bodies in lax mode (``"2"`` becomes ``2``); this ``before_request`` hook
first checks the raw JSON against the handler's body Struct with ``strict=True``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException, ValidationException


async def reject_lax_bodies(request: Request[Any, Any, Any]) -> None:
    field = request.route_handler.parsed_data_field
    model = field.annotation if field is not None else None
    if not (isinstance(model, type) and issubclass(model, msgspec.Struct)):
        return
    try:
        raw = await request.json()
    except SerializationException:
        return  # malformed JSON: the normal body parsing answers 400 for it
    try:
        msgspec.convert(raw, model, strict=True)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        key = path.rstrip("`").lstrip(".")
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}",
            extra=[{"message": message, "key": key or "data", "source": "body"}],
        ) from exc
