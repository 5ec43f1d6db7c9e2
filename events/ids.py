"""Time-ordered ids (UUIDv7, RFC 9562) and timestamps in the envelope's format."""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def uuid7(ms: int | None = None) -> str:
    """A UUIDv7: 48 bits of Unix milliseconds, then randomness, so ids sort by creation time.

    ``ms`` (default: now) lets the store give an append's events the millisecond of its
    ``at``, which a compact log entry then leaves out (:mod:`events.codec`).
    """
    if ms is None:
        ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_CANONICAL_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def uuid7_ms(text: str) -> int | None:
    """The Unix millisecond a UUIDv7 carries; ``None`` for anything that is not one in the
    canonical (lower-case, hyphenated) form :func:`uuid7` writes: another UUID version, or
    text that is no UUID. On every read of a compact entry, hence a regex, not ``uuid.UUID``."""
    if _UUID7.fullmatch(text) is None:
        return None
    return int(text[:8] + text[9:13], 16)


def is_canonical_at(text: str) -> bool:
    """Whether ``text`` is in the form :func:`format_at` writes (so that the millisecond
    alone gives it back); assumes it parses (:func:`parse_at`)."""
    return _CANONICAL_AT.fullmatch(text) is not None


def format_at(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-23T20:00:00.123Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_at(text: str) -> datetime:
    """Inverse of :func:`format_at`; accepts any RFC 3339 offset."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def at_ms(moment: datetime) -> int:
    """The Unix millisecond of ``moment`` (exact integer arithmetic, no float rounding)."""
    return (moment - _EPOCH) // _MS


def ms_at(ms: int) -> datetime:
    """Inverse of :func:`at_ms`: the UTC datetime of a Unix millisecond."""
    return _EPOCH + ms * _MS


def now_at() -> str:
    return format_at(datetime.now(UTC))
