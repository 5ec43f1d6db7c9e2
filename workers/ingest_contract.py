"""The ingress contract (``docs/producers.md``): one entry's fields in, a valid event or the field at fault.

Pure: no Redis, no store. :func:`validate` checks an event entry with the same msgspec
types the log uses, stricter than reading the log; :func:`validate_legacy` checks a legacy
feed entry (``payload``). Both raise :class:`Invalid` naming the part at fault, which the
gateway (:mod:`workers.ingest`) dead-letters with that reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from app.validation import NUL_REASON, nul_path
from events.ids import parse_at
from events.store import Metadata
from events.types import (
    CATALOG_EVENT_TYPES,
    EVENT_TYPES,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    StockAdjusted,
)
from events.upcasting import upcast
from workers import legacy_feed

MAX_ENTRY_BYTES = 64 * 1024
"""Field names plus values of one ingress entry; bigger ones are dead-lettered unread."""

REQUIRED_FIELDS: tuple[str, ...] = ("id", "type", "schema", "data")
OPTIONAL_FIELDS: tuple[str, ...] = ("at", "actor", "correlation", "causation")
META_MAX_CHARS = 200
_AT_PATH = re.compile(r"at `\$((?:\.[A-Za-z0-9_]+|\[\d+\])*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")

CatalogEvent = ProductCreated | ProductUpdated | ProductDeleted | StockAdjusted


class Invalid(ValueError):
    """An entry that breaks the contract; ``field`` names the part at fault (``data.price``)."""

    def __init__(self, reason: str, field: str = "", event_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.event_id = event_id


@dataclass(frozen=True, slots=True)
class Ingested:
    """A valid ingress entry: the producer's event id, the event, and who caused it."""

    event_id: str
    event: CatalogEvent
    meta: Metadata
    at: str | None = None


def field_of(error: msgspec.ValidationError, prefix: str) -> str:
    """``Expected `int`, got `str` - at `$.price``` → ``data.price``."""
    text = str(error)
    if match := _AT_PATH.search(text):
        path = match.group(1).lstrip(".")
        if missing := _MISSING.search(text):
            path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return f"{prefix}.{path}" if path else prefix
    if missing := _MISSING.search(text):
        return f"{prefix}.{missing.group(1)}"
    return prefix


def _text(fields: dict[bytes, bytes], name: str) -> str | None:
    raw = fields.get(name.encode())
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise Invalid(f"field {name!r} is not UTF-8", name) from exc


def entry_size(fields: dict[bytes, bytes]) -> int:
    return sum(len(k) + len(v) for k, v in fields.items())


def validate(
    source: str, fields: dict[bytes, bytes], *, max_entry_bytes: int = MAX_ENTRY_BYTES
) -> Ingested:
    """Check one ingress entry against the contract; raises :class:`Invalid` naming the field.

    Stricter than reading the log: unknown entry fields and unknown keys inside ``data``
    are refused, so a producer's typo (``prcie``) fails loudly instead of becoming a default.
    """
    size = entry_size(fields)
    if size > max_entry_bytes:
        raise Invalid(f"entry is {size} bytes, the limit is {max_entry_bytes}", "entry")
    names = set()
    for key in fields:
        try:
            names.add(key.decode())
        except UnicodeDecodeError as exc:
            raise Invalid(f"field name {key!r} is not UTF-8", "entry") from exc
    missing = [name for name in REQUIRED_FIELDS if name not in names]
    if missing:
        raise Invalid(f"missing field {missing[0]!r}", missing[0])
    unknown = sorted(names - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise Invalid(f"unknown field {unknown[0]!r}", unknown[0])

    raw_id = _text(fields, "id") or ""
    try:
        event_id = str(uuid.UUID(raw_id))
    except ValueError as exc:
        raise Invalid(f"id {raw_id[:80]!r} is not a UUID", "id") from exc

    def invalid(reason: str, name: str) -> Invalid:
        return Invalid(reason, name, event_id)

    ev_type = _text(fields, "type") or ""
    cls = EVENT_TYPES.get(ev_type)
    if cls is None:
        raise invalid(f"unknown event type {ev_type[:80]!r}", "type")
    if ev_type not in CATALOG_EVENT_TYPES:
        allowed = ", ".join(sorted(CATALOG_EVENT_TYPES))
        raise invalid(f"{ev_type} may not be published by producers (allowed: {allowed})", "type")
    schema_text = _text(fields, "schema") or ""
    if not schema_text.isdigit() or not 0 < int(schema_text) <= cls.SCHEMA:
        raise invalid(
            f"schema {schema_text[:20]!r} of {ev_type} is not known (current: {cls.SCHEMA})",
            "schema",
        )
    schema = int(schema_text)

    meta_values: dict[str, str] = {}
    for name in ("actor", "correlation", "causation"):
        value = _text(fields, name)
        if value is not None:
            if len(value) > META_MAX_CHARS:
                raise invalid(f"{name} is longer than {META_MAX_CHARS} characters", name)
            if "\x00" in value:
                raise invalid(f"{name} {NUL_REASON}", name)
            meta_values[name] = value
    at = _text(fields, "at")
    if at is not None:
        try:
            parse_at(at)
        except ValueError as exc:
            raise invalid(f"at {at[:40]!r} is not an RFC 3339 time", "at") from exc

    event = _decode_data(fields[b"data"], cls, schema, invalid)
    if not isinstance(event, CatalogEvent):  # pragma: no cover - guarded by CATALOG_EVENT_TYPES
        raise invalid(f"{ev_type} is not a catalog event", "type")
    if (path := nul_path(msgspec.to_builtins(event))) is not None:
        raise invalid(f"data.{path} {NUL_REASON}", f"data.{path}")
    try:
        uuid.UUID(event.product_id)
    except ValueError as exc:
        raise invalid(
            f"product_id {event.product_id[:80]!r} is not a UUID", "data.product_id"
        ) from exc
    meta = Metadata(
        actor=meta_values.get("actor") or f"ingest:{source}",
        correlation=meta_values.get("correlation") or event_id,
        causation=meta_values.get("causation", ""),
        source=f"ingest:{source}",
    )
    return Ingested(event_id=event_id, event=event, meta=meta, at=at)


def _decode_data(
    data: bytes, cls: type, schema: int, invalid: Callable[[str, str], Invalid]
) -> Any:
    try:
        raw = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    except msgspec.ValidationError as exc:
        raise invalid(f"data must be a JSON object: {exc}", "data") from exc
    except msgspec.DecodeError as exc:
        raise invalid(f"data is not JSON: {exc}", "data") from exc
    allowed = {f.encode_name for f in msgspec.structs.fields(cls)} | {"type"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise invalid(f"unknown field `{unknown[0]}` in data", f"data.{unknown[0]}")
    tag = raw.get("type")
    if tag is not None and msgspec.json.decode(tag) != cls.__name__:
        raise invalid(
            f"data.type {bytes(tag)[:40]!r} does not match type {cls.__name__}", "data.type"
        )
    try:
        if schema == cls.SCHEMA:
            return msgspec.json.decode(data, type=cls)
        old = msgspec.json.decode(data, type=dict[str, Any])
        return msgspec.convert(upcast(cls.__name__, schema, cls.SCHEMA, old), cls)
    except msgspec.ValidationError as exc:
        raise invalid(f"data: {exc}", field_of(exc, "data")) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise invalid(
            f"data of {cls.__name__} v{schema} cannot be upcast: {exc!r}", "data"
        ) from exc


def validate_legacy(
    fields: dict[bytes, bytes], *, max_entry_bytes: int = MAX_ENTRY_BYTES
) -> legacy_feed.LegacyMessage:
    """Check one legacy feed entry (its ``payload``); raises :class:`Invalid` naming the field."""
    size = entry_size(fields)
    if size > max_entry_bytes:
        raise Invalid(f"entry is {size} bytes, the limit is {max_entry_bytes}", "entry")
    try:
        message = legacy_feed.parse(fields[b"payload"])
    except msgspec.ValidationError as exc:
        raise Invalid(f"payload: {exc}", field_of(exc, "payload")) from exc
    except msgspec.DecodeError as exc:
        raise Invalid(f"payload is not JSON: {exc}", "payload") from exc
    if (path := nul_path(msgspec.to_builtins(message))) is not None:
        raise Invalid(f"payload.{path} {NUL_REASON}", f"payload.{path}")
    return message
