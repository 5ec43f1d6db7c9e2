"""Time-ordered ids (UUIDv7, RFC 9562) and timestamps in the envelope's format."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime


def uuid7() -> str:
    """A UUIDv7: 48 bits of Unix milliseconds, then randomness, so ids sort by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def format_at(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-23T20:00:00.123Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_at(text: str) -> datetime:
    """Inverse of :func:`format_at`; accepts any RFC 3339 offset."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def now_at() -> str:
    return format_at(datetime.now(UTC))
