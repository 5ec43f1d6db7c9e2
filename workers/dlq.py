"""Dead letters: entries a projection could not decode or apply, kept with their error.

A dead letter is one entry of ``{prefix}:dlq:{projection}`` holding every field of the
original log entry unchanged, plus ``dlq.*`` fields saying what went wrong and where it
came from. Because the original fields are intact, re-driving decodes the entry exactly as
the runner would have. DLQ streams may be XDEL'd once re-driven; the canonical log never.

Counters live in the hash ``{prefix}:metrics:{projection}`` (``dead_letters``,
``redriven``, ``applied``, ``batches``, ``retries``, ``sink_failures``).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from events.codec import decode_entry
from events.ids import now_at
from events.keys import Keys
from projections.base import Projection

log = structlog.get_logger("workers.dlq")

META = "dlq."
"""Prefix of the fields the dead-letter stream adds to the original entry's fields."""


def metrics_key(keys: Keys, projection: str) -> str:
    return f"{keys.prefix}:metrics:{projection}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered entry, as read back from the DLQ stream."""

    dlq_id: str
    projection: str
    partition: int
    entry_id: str
    error: str
    attempts: int
    dead_at: str
    fields: dict[bytes, bytes]
    """The original log entry's fields, unchanged."""


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class DeadLetters:
    """Write, list and re-drive the dead letters of projections."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def put(
        self,
        projection: str,
        partition: int,
        entry_id: str,
        fields: dict[bytes, bytes] | None,
        error: str,
        attempts: int,
    ) -> str:
        """Store a dead letter and count it; returns its id in the DLQ stream."""
        record: dict[str | bytes, bytes | str | int] = dict(fields or {})
        record.update(
            {
                f"{META}projection": projection,
                f"{META}partition": partition,
                f"{META}entry_id": entry_id,
                f"{META}error": error,
                f"{META}attempts": attempts,
                f"{META}at": now_at(),
            }
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.dlq(projection), record)  # type: ignore[arg-type]
            pipe.hincrby(metrics_key(self.keys, projection), "dead_letters", 1)
            dlq_id, _ = await pipe.execute()
        return _text(dlq_id)

    async def list(self, projection: str, ids: list[str] | None = None) -> list[DeadLetter]:
        """Dead letters of ``projection`` in the order they died (only ``ids``, if given)."""
        rows = await self.redis.xrange(self.keys.dlq(projection))
        wanted = set(ids) if ids else None
        letters: list[DeadLetter] = []
        for dlq_id, fields in rows:
            did = _text(dlq_id)
            if wanted is not None and did not in wanted:
                continue
            meta = {
                _text(k)[len(META) :]: _text(v)
                for k, v in fields.items()
                if _text(k).startswith(META)
            }
            original = {k: v for k, v in fields.items() if not _text(k).startswith(META)}
            letters.append(
                DeadLetter(
                    dlq_id=did,
                    projection=meta.get("projection", projection),
                    partition=int(meta.get("partition", "0")),
                    entry_id=meta.get("entry_id", ""),
                    error=meta.get("error", ""),
                    attempts=int(meta.get("attempts", "0")),
                    dead_at=meta.get("at", ""),
                    fields=original,
                )
            )
        return letters

    async def projections(self) -> list[str]:
        """Names of the projections that have a dead-letter stream."""
        prefix = self.keys.dlq("")
        names = [
            _text(key)[len(prefix) :] async for key in self.redis.scan_iter(match=f"{prefix}*")
        ]
        return sorted(names)

    async def redrive(self, projection: Projection, letter: DeadLetter) -> None:
        """Decode and apply one dead letter again; on success remove it from the DLQ.

        Raises whatever decoding or applying raises; the dead letter then stays.
        """
        event = decode_entry(letter.entry_id, letter.fields, letter.partition)
        await projection.apply(letter.partition, [event])
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xdel(self.keys.dlq(projection.name), letter.dlq_id)
            pipe.hincrby(metrics_key(self.keys, projection.name), "redriven", 1)
            await pipe.execute()
        log.info(
            "dead_letter_redriven",
            projection=projection.name,
            partition=letter.partition,
            entry_id=letter.entry_id,
            event_id=_text(letter.fields.get(b"id", b"")),
        )
