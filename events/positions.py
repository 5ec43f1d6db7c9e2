"""Read-your-writes positions: an opaque, URL-safe token naming a log entry per partition.

Format: ``<partition>-<ms>-<seq>`` items joined by ``.``, e.g. ``3-1732392000123-0.5-1732392000123-1``.
A view has applied a position when, for every partition named, its checkpoint is at or
past that entry id. A client that wants to see several writes joins their tokens with ``.``:
parsing keeps the furthest entry named for each partition.
"""

from __future__ import annotations

import re

_ITEM = re.compile(r"^(\d{1,4})-(\d{1,20})-(\d{1,20})$")


class InvalidPosition(ValueError):
    """The token is not a position this server issued."""


def parse_stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_position(ids: dict[int, str]) -> str:
    return ".".join(f"{p}-{ids[p]}" for p in sorted(ids))


def parse_position(token: str) -> dict[int, str]:
    result: dict[int, str] = {}
    for item in token.split("."):
        match = _ITEM.match(item)
        if match is None:
            raise InvalidPosition(f"not a position: {token!r}")
        p, ms, seq = match.groups()
        entry = f"{int(ms)}-{int(seq)}"
        current = result.get(int(p))
        if current is None or parse_stream_id(entry) > parse_stream_id(current):
            result[int(p)] = entry
    return result


def reached(checkpoints: dict[int, str | None], wanted: dict[int, str]) -> bool:
    """True when every partition's checkpoint is at or past the wanted entry id."""
    for p, entry in wanted.items():
        done = checkpoints.get(p)
        if done is None or parse_stream_id(done) < parse_stream_id(entry):
            return False
    return True
