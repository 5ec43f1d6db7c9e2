"""Strict request bodies: a wrong JSON type is a 400, never silently coerced; no text holds NUL.

Litestar converts bodies in lax mode (``"2"`` becomes ``2``); this ``before_request`` hook
decodes the raw bytes into the handler's body Struct with ``strict=True`` first, and hands
the result to Litestar, so a body is decoded and validated once.

PostgreSQL ``text`` cannot hold ``\\x00``: a NUL in any string of an input (HTTP body,
query parameter bound for PostgreSQL, ingress entry) would be accepted by the log and then
refused by the audit and warehouse sinks. :func:`nul_path` is the one check every input
path applies, at validation time; :data:`NO_NUL` is the same rule as a parameter pattern.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException, ValidationException
from litestar.utils.scope.state import ScopeState

NO_NUL = r"^[^\x00]*$"
"""Pattern of a string without NUL (for ``QueryParameter(pattern=...)`` and msgspec ``Meta``)."""
NUL_REASON = "must not contain NUL (\\x00) characters"


def nul_path(value: Any, path: str = "") -> str | None:
    """Where the first string holding NUL is in decoded JSON (``lines[0].name``), or ``None``.

    Object keys count too (the key's own path is named)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return here
            if (found := nul_path(item, here)) is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if (found := nul_path(item, f"{path}[{i}]")) is not None:
                return found
    return None


def reject_nul(value: Any, source: str = "body") -> None:
    """Raise a 400 naming the field if ``value`` (decoded JSON) holds a NUL anywhere."""
    path = nul_path(value)
    if path is not None:
        raise ValidationException(
            detail=f"{path or source}: {NUL_REASON}",
            extra=[{"message": NUL_REASON, "key": path or "data", "source": source}],
        )


NUL_ESCAPE = b"\\u0000"
"""The only way a NUL reaches a decoded JSON string (a raw control byte is invalid JSON)."""


def _prime_body(request: Request[Any, Any, Any], decoded: msgspec.Struct) -> None:
    """Hand Litestar the body this hook already decoded: its own conversion then passes the
    Struct through as is (``msgspec.convert`` returns an instance of the target type
    unchanged) instead of decoding and converting the body a second time. ``ScopeState`` is
    Litestar's cache of the parsed body; without it (another Litestar) nothing is primed and
    Litestar decodes the body itself, as before."""
    with contextlib.suppress(AttributeError):
        ScopeState.from_scope(request.scope).json = decoded


async def reject_lax_bodies(request: Request[Any, Any, Any]) -> None:
    """Decode a Struct body once, strictly, straight from its bytes (400 naming the field
    when a type is wrong), and check for NUL only when the bytes can hold one."""
    field = request.route_handler.parsed_data_field
    if field is None:
        return
    model = field.annotation
    if not (isinstance(model, type) and issubclass(model, msgspec.Struct)):
        try:
            reject_nul(await request.json())
        except SerializationException:
            pass  # malformed JSON: the normal body parsing answers 400 for it
        return
    body = await request.body()
    if NUL_ESCAPE in body:
        try:
            reject_nul(await request.json())
        except SerializationException:
            return
    try:
        decoded = msgspec.json.decode(body or b"null", type=model, strict=True)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        key = path.rstrip("`").lstrip(".")
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}",
            extra=[{"message": message, "key": key or "data", "source": "body"}],
        ) from exc
    except msgspec.DecodeError:
        return  # malformed JSON: the normal body parsing answers 400 for it
    _prime_body(request, decoded)
