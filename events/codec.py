"""The envelope and its one codec: events to stream fields and back, with upcasting on read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from events.errors import MalformedEvent
from events.ids import parse_at
from events.types import EVENT_TYPES, Event
from events.upcasting import upcast

FIELDS: tuple[str, ...] = (
    "id",
    "type",
    "schema",
    "aggregate",
    "seq",
    "at",
    "actor",
    "correlation",
    "causation",
    "source",
    "data",
)
"""Every log entry has exactly these fields in this order, so Redis stores the names once
per stream node (the listpack "same fields" flag) instead of once per entry."""

_FIELD_KEYS = tuple(name.encode() for name in FIELDS)

Fields = dict[bytes, bytes] | dict[str, str]
"""A stream entry's fields as the Redis client returned them (bytes, or text when decoded)."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)
_raw_decoder = msgspec.json.Decoder(dict[str, Any])


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as read back from the log: the envelope plus the decoded, upcast payload.

    ``fields`` is the entry exactly as stored (the very mapping the reader got, not a copy).
    The audit hashes it, so that its chain does not depend on this decoder or its upcasters.
    """

    entry_id: str
    partition: int
    id: str
    type: str
    schema: int
    aggregate: str
    seq: int
    at: datetime
    actor: str
    correlation: str
    causation: str
    source: str
    event: Event
    fields: Fields | None = None

    @property
    def position(self) -> str:
        """This entry's read-your-writes token (see :mod:`events.positions`)."""
        from events.positions import format_position

        return format_position({self.partition: self.entry_id})


class UndecodableEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A log entry that does not decode, kept as stored.

    The runtime hands these only to a projection that sets ``records_raw = True`` (the
    audit), in log order inside the same batch as the decoded events, so that it can record
    every entry; every other view retries and dead-letters them.
    """

    entry_id: str
    partition: int
    fields: Fields
    error: str
    """Why it does not decode (the :class:`MalformedEvent` message)."""

    def _field(self, name: str) -> str:
        raw = self.fields.get(name.encode(), self.fields.get(name, b""))  # type: ignore[call-overload]
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)

    @property
    def id(self) -> str:
        """The stored event id, if any (for logs and dead letters)."""
        return self._field("id")

    @property
    def aggregate(self) -> str:
        """The stored aggregate, if any (its dead letter parks that aggregate's sequence)."""
        return self._field("aggregate")

    @property
    def type(self) -> str:
        return self._field("type")


Recorded = RecordedEvent | UndecodableEntry
"""What a ``records_raw`` projection's batch holds."""


def undecodable(
    entry_id: bytes | str, fields: Fields, partition: int, error: MalformedEvent
) -> UndecodableEntry:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return UndecodableEntry(entry_id=eid, partition=partition, fields=fields, error=error.reason)


def encode_data(event: Event) -> bytes:
    """The ``data`` field of an entry: the event as JSON (its ``type`` tag included)."""
    return _encoder.encode(event)


def encode(obj: Any) -> bytes:
    """Shared JSON encoder for anything msgspec can encode."""
    return _encoder.encode(obj)


def _text(value: bytes | str | None, entry_id: str, name: str) -> str:
    if value is None:
        raise MalformedEvent(entry_id, f"missing field {name!r}")
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise MalformedEvent(entry_id, f"field {name!r} is not UTF-8") from exc
    return value


def decode_entry(entry_id: bytes | str, fields: Fields, partition: int) -> RecordedEvent:
    """Decode one stream entry; any defect raises :class:`MalformedEvent` with the entry id.

    Fields beyond the envelope are ignored, and unknown keys inside ``data`` are tolerated,
    so older readers keep working when newer writers add things.
    """
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    get = fields.get
    values: list[str] = []
    for name, key in zip(FIELDS, _FIELD_KEYS, strict=True):
        raw = get(key) if key in fields else get(name)  # type: ignore[call-overload]
        if name == "data":
            if raw is None:
                raise MalformedEvent(eid, "missing field 'data'")
            data = raw
        else:
            values.append(_text(raw, eid, name))
    ev_id, ev_type, schema_s, aggregate, seq_s, at_s, actor, correlation, causation, source = values
    cls = EVENT_TYPES.get(ev_type)
    if cls is None:
        raise MalformedEvent(eid, f"unknown event type {ev_type!r}")
    try:
        schema = int(schema_s)
        seq = int(seq_s)
        at = parse_at(at_s)
    except ValueError as exc:
        raise MalformedEvent(eid, f"bad envelope value: {exc}") from exc
    try:
        if schema == cls.SCHEMA:
            event = _decoder.decode(data)
        elif 0 < schema < cls.SCHEMA:
            raw_data = upcast(ev_type, schema, cls.SCHEMA, _raw_decoder.decode(data))
            event = msgspec.convert(raw_data, Event)
        else:
            raise MalformedEvent(eid, f"{ev_type} schema {schema} is not known here")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MalformedEvent(eid, f"invalid data: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise MalformedEvent(eid, f"cannot upcast {ev_type} v{schema}: {exc!r}") from exc
    if type(event).__name__ != ev_type:
        raise MalformedEvent(eid, f"data is a {type(event).__name__}, envelope says {ev_type}")
    return RecordedEvent(
        entry_id=eid,
        partition=partition,
        id=ev_id,
        type=ev_type,
        schema=cls.SCHEMA,
        aggregate=aggregate,
        seq=seq,
        at=at,
        actor=actor,
        correlation=correlation,
        causation=causation,
        source=source,
        event=event,
        fields=fields,
    )
