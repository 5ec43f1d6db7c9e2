"""Sequenced dead letters (as Axon Framework's ``SequencedDeadLetterQueue``): an entry a
projection could not decode or apply parks its whole *sequence*, the later entries of its
aggregate for that projection, behind it; other sequences go on; a retry applies a parked
sequence in order.

Storage, per projection:

* ``{prefix}:dlq:{projection}`` (stream): every parked entry, with every field of the
  original log entry unchanged, plus ``dlq.*`` fields: where it came from, its
  ``dlq.sequence``, and for a follower ``dlq.head`` (the DLQ id of the entry that failed).
  Because the original fields are intact, re-driving decodes the entry exactly as the
  runner would have. Entries are XDEL'd once re-driven; the canonical log never.
* ``{prefix}:dlq:{projection}:parked`` (hash): sequence → DLQ id of its head. The runner
  looks the sequences of a batch up here (one ``HMGET``) before applying it.
* ``...:parked:count``, ``...:parked:first`` and ``...:parked:last`` (hashes): entries left
  in each sequence, and the entry ids of its head and of its last entry. A re-delivered
  entry is not parked twice; one before the head (re-fed from the view's checkpoint) is
  not part of the sequence, and the runner applies it.

A sequence is usually the entry's aggregate; a projection whose own order is wider names
another sequence (:data:`SEQUENCING`). Adding to a sequence and removing its last entry
are scripts, so a follower the runner parks while ``dlq retry`` finishes the sequence is
either picked up by the retry or, if the sequence is already gone, applied by the runner.

Counters live in the hash ``{prefix}:metrics:{projection}``: ``dead_letters`` (heads),
``parked_followers``, ``redriven``, and ``parked`` (a gauge: entries parked right now),
beside the runner's ``applied``, ``batches``, ``retries``, ``sink_failures``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import structlog

from events.codec import RecordedEvent, decode_entry
from events.ids import now_at
from events.keys import Keys
from projections.base import Projection

log = structlog.get_logger("workers.dlq")

META = "dlq."
"""Prefix of the fields the dead-letter stream adds to the original entry's fields."""

SEQUENCING: dict[str, str] = {"audit": "partition"}
"""Projection → sequencing policy when it is not ``aggregate``. The audit chains every
partition in log order (row ``n`` hashes row ``n-1``), so its sequence is the partition:
a row can never be appended out of log order, and a re-drive lands exactly where a fold
of the log puts it."""


def metrics_key(keys: Keys, projection: str) -> str:
    return keys.metrics(projection)


_OLD_SUFFIXES = ("", ":parked", ":parked:count", ":parked:last", ":parked:first")


async def migrate_key_names(redis: aioredis.Redis, keys: Keys) -> int:
    """Rename dead-letter and metrics keys written before they carried a hash tag
    (``{prefix}:dlq:<view>``, ``:parked…``, ``{prefix}:metrics:<view>``, the ingress
    ``dlq:ingest:<source>`` and ``metrics:ingest:<source>``) to their tagged names; returns
    how many it renamed. Idempotent; a name already taken is left alone and logged.

    Run on one node before moving to a Redis Cluster (a cluster refuses a ``RENAME``
    across slots, and a new cluster has no old keys); workers run it at start.
    """
    renamed = 0
    for kind in ("dlq", "metrics"):
        base = f"{keys.prefix}:{kind}:"
        async for raw in redis.scan_iter(match=f"{base}*", count=1000):
            old = raw.decode() if isinstance(raw, bytes) else str(raw)
            new = _tagged(keys, kind, old[len(base) :])
            if new is None or new == old:
                continue
            if await redis.renamenx(old, new):
                renamed += 1
            else:
                log.warning("key_migration_skipped", key=old, target=new)
    if renamed:
        log.info("keys_migrated", renamed=renamed)
    return renamed


def _tagged(keys: Keys, kind: str, rest: str) -> str | None:
    """The tagged name of an untagged ``dlq``/``metrics`` key's ``rest`` (``None``: it is
    tagged already)."""
    if "{" in rest:
        return None
    if rest.startswith("ingest:"):
        source = rest.removeprefix("ingest:")
        return keys.ingest_dlq(source) if kind == "dlq" else keys.ingest_metrics(source)
    if kind == "metrics":
        return keys.metrics(rest)
    for suffix in sorted(_OLD_SUFFIXES, key=len, reverse=True):
        if suffix and rest.endswith(suffix):
            return keys.dlq(rest.removesuffix(suffix)) + suffix
    return keys.dlq(rest)


def sequence_of(
    projection: str, fields: dict[bytes, bytes] | None, partition: int, entry_id: str
) -> str:
    """The sequence an entry belongs to for ``projection``, read from its raw fields (so an
    undecodable entry has one too); an entry without an aggregate is a sequence of its own."""
    if SEQUENCING.get(projection) == "partition":
        return f"partition:{partition}"
    aggregate = _text((fields or {}).get(b"aggregate", b""))
    return aggregate or f"entry:{partition}:{entry_id}"


def _sequence_for(
    projection: str,
    fields: dict[bytes, bytes] | None,
    partition: int,
    entry_id: str,
    aggregate: str | None,
) -> str:
    if aggregate is not None:
        fields = {**(fields or {}), b"aggregate": aggregate.encode()}
    return sequence_of(projection, fields, partition, entry_id)


# KEYS: stream, parked, count, last, metrics, first.
# ARGV: mode ('head' | 'follow'), sequence, entry id, then the record's field/value pairs.
# 'head' parks the entry as a new sequence's head, or behind it if the sequence exists;
# 'follow' parks it only if the sequence exists and the entry is not before its head.
# Returns {dlq id, role}; role is 'head', 'follower', 'duplicate' (already parked: {head
# id, 'duplicate'}) or 'none' (no sequence, or an entry before it: the caller applies it).
_PARK = """
local seq, entry = ARGV[2], ARGV[3]
local function before_or_at(a, b)
  local ams, asq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bsq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then return false end
  ams, asq, bms, bsq = tonumber(ams), tonumber(asq), tonumber(bms), tonumber(bsq)
  return ams < bms or (ams == bms and asq <= bsq)
end
local head = redis.call('HGET', KEYS[2], seq)
if not head and ARGV[1] == 'follow' then return {'', 'none'} end
if head then
  local first = redis.call('HGET', KEYS[6], seq)
  if ARGV[1] == 'follow' and first and first ~= entry and before_or_at(entry, first) then
    return {'', 'none'}
  end
  local last = redis.call('HGET', KEYS[4], seq)
  if last and before_or_at(entry, last) then return {head, 'duplicate'} end
end
local record = {}
for i = 4, #ARGV do record[#record + 1] = ARGV[i] end
record[#record + 1] = 'dlq.sequence'
record[#record + 1] = seq
record[#record + 1] = 'dlq.head'
record[#record + 1] = head or ''
local id = redis.call('XADD', KEYS[1], '*', unpack(record))
redis.call('HINCRBY', KEYS[3], seq, 1)
redis.call('HSET', KEYS[4], seq, entry)
redis.call('HINCRBY', KEYS[5], 'parked', 1)
if head then
  redis.call('HINCRBY', KEYS[5], 'parked_followers', 1)
  return {id, 'follower'}
end
redis.call('HSET', KEYS[2], seq, id)
redis.call('HSET', KEYS[6], seq, entry)
redis.call('HINCRBY', KEYS[5], 'dead_letters', 1)
return {id, 'head'}
"""

# KEYS: stream, parked, count, last, metrics, first. ARGV: dlq id, sequence, counter.
# Removes one re-driven (or discarded) entry; the sequence ends (is unparked) with its last
# entry. Returns the entries left in the sequence (-1: the entry was gone already).
_REMOVE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
if ARGV[2] == '' then return 0 end
redis.call('HINCRBY', KEYS[5], 'parked', -1)
local left = redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
if left <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[2])
  redis.call('HDEL', KEYS[6], ARGV[2])
  return 0
end
return left
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One parked entry, as read back from the DLQ stream."""

    dlq_id: str
    projection: str
    partition: int
    entry_id: str
    error: str
    """Why it failed (a head); a follower says which head it waits behind."""
    attempts: int
    dead_at: str
    fields: dict[bytes, bytes]
    """The original log entry's fields, unchanged."""
    sequence: str = ""
    """The sequence it belongs to ("" for a dead letter stored before sequences existed)."""
    head: str = ""
    """The DLQ id of its sequence's head ("" for the head itself)."""

    @property
    def event_id(self) -> str:
        return _text(self.fields.get(b"id", b""))

    @property
    def type(self) -> str:
        return _text(self.fields.get(b"type", b""))


@dataclass(frozen=True, slots=True)
class ParkedSequence:
    """A sequence of parked entries: its failed head first, then the entries behind it."""

    projection: str
    sequence: str
    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def head(self) -> DeadLetter:
        return self.letters[0]

    @property
    def cause(self) -> str:
        """The error of the entry that parked the sequence."""
        heads = [letter for letter in self.letters if not letter.head]
        return (heads[0] if heads else self.letters[0]).error

    @property
    def first_at(self) -> str:
        return min(letter.dead_at for letter in self.letters)

    @property
    def last_at(self) -> str:
        return max(letter.dead_at for letter in self.letters)


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    """What a retry of one sequence did."""

    sequence: str
    redriven: list[DeadLetter]
    failed: DeadLetter | None = None
    error: str = ""
    """Why ``failed`` failed again; it and everything behind it stay parked."""


class OutOfOrder(RuntimeError):
    """A parked entry asked to be re-driven while an earlier entry of its sequence waits."""


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def redrive_apply(
    projection: Projection, partition: int, events: Sequence[RecordedEvent]
) -> None:
    """Apply re-driven events through the projection's re-drive path when it has one.

    A parked entry lies behind the partition's checkpoint once later entries of other
    sequences were applied, so a view that guards by checkpoint must take another guard
    here (``redrive``: per aggregate version or event id). A projection without one (its
    ``apply`` is idempotent per event, or its sequencing keeps the checkpoint behind the
    parked entries) is re-driven through ``apply``.
    """
    redrive = getattr(projection, "redrive", None)
    if redrive is None:
        await projection.apply(partition, events)
    else:
        await redrive(partition, events)


class DeadLetters:
    """Park, list and re-drive the dead letters of projections (see the module docstring).

    The API a writer of dead letters uses (the runner; ``rebuild --park-failures``):

    * :meth:`put` parks a failed entry as the head of its sequence (or behind it, if that
      sequence is parked already);
    * :meth:`parked` says which of some sequences are parked (one round trip);
    * :meth:`park` parks an entry behind its sequence's head, and returns ``None`` when the
      sequence is not parked (any more): then the caller applies the entry itself.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._park = redis.register_script(_PARK)
        self._remove = redis.register_script(_REMOVE)

    def _keys(self, projection: str) -> list[str]:
        stream = self.keys.dlq(projection)
        return [
            stream,
            f"{stream}:parked",
            f"{stream}:parked:count",
            f"{stream}:parked:last",
            metrics_key(self.keys, projection),
            f"{stream}:parked:first",
        ]

    async def _store(
        self,
        mode: str,
        projection: str,
        partition: int,
        entry_id: str,
        fields: dict[bytes, bytes] | None,
        error: str,
        attempts: int,
        sequence: str | None,
    ) -> tuple[str, str]:
        seq = sequence or sequence_of(projection, fields, partition, entry_id)
        meta: dict[str, str | int] = {
            f"{META}projection": projection,
            f"{META}partition": partition,
            f"{META}entry_id": entry_id,
            f"{META}error": error,
            f"{META}attempts": attempts,
            f"{META}at": now_at(),
        }
        pairs = list(itertools.chain.from_iterable((fields or {}).items()))
        pairs += list(itertools.chain.from_iterable(meta.items()))
        dlq_id, role = await self._park(
            keys=self._keys(projection), args=[mode, seq, entry_id, *pairs]
        )
        return _text(dlq_id), _text(role)

    async def put(
        self,
        projection: str,
        partition: int,
        entry_id: str,
        fields: dict[bytes, bytes] | None,
        error: str,
        attempts: int,
        *,
        aggregate: str | None = None,
        sequence: str | None = None,
    ) -> str:
        """Park a failed entry as the head of its sequence; returns its DLQ id.

        The sequence is ``sequence`` if given, else the one the projection's policy gives
        for ``aggregate`` (default: the entry's own, :func:`sequence_of`). If the
        sequence is parked already the entry goes behind it; if this very entry is parked
        already (a re-delivery), nothing is added and the head's id is returned.
        """
        seq = sequence or _sequence_for(projection, fields, partition, entry_id, aggregate)
        dlq_id, _ = await self._store(
            "head", projection, partition, entry_id, fields, error, attempts, seq
        )
        return dlq_id

    async def park(
        self,
        projection: str,
        partition: int,
        entry_id: str,
        fields: dict[bytes, bytes] | None,
        *,
        aggregate: str | None = None,
        sequence: str | None = None,
    ) -> str | None:
        """Park an entry behind the head of its parked sequence, unapplied.

        Returns its DLQ id (the head's, if this entry was parked already), or ``None`` if
        the sequence is not parked (a retry just finished it) or the entry comes before its
        head: the caller must then apply the entry, which is still in order.
        """
        seq = sequence or _sequence_for(projection, fields, partition, entry_id, aggregate)
        dlq_id, role = await self._store(
            "follow", projection, partition, entry_id, fields, "", 0, seq
        )
        return None if role == "none" else dlq_id

    async def parked(self, projection: str, sequences: Sequence[str]) -> set[str]:
        """Which of ``sequences`` are parked for ``projection``.

        The runner asks this for every batch, so the usual cases are cheap: nothing parked
        is one ``HLEN``; a few parked sequences are fetched whole and matched here.
        """
        unique = list(dict.fromkeys(sequences))
        key = self._keys(projection)[1]
        if not unique or not (size := await self.redis.hlen(key)):
            return set()
        if size <= len(unique):
            return {_text(seq) for seq in await self.redis.hkeys(key)} & set(unique)
        heads = await self.redis.hmget(key, unique)
        return {seq for seq, head in zip(unique, heads, strict=True) if head is not None}

    async def count(self, projection: str) -> int:
        """Entries parked for ``projection`` right now (heads and followers)."""
        return int(await self.redis.xlen(self.keys.dlq(projection)))

    async def count_by_partition(self, projection: str) -> dict[int, int]:
        """Entries parked for ``projection`` right now, per partition of the log."""
        counts: dict[int, int] = {}
        async for _, partition in self._scan(projection, f"{META}partition".encode()):
            counts[int(partition or 0)] = counts.get(int(partition or 0), 0) + 1
        return counts

    async def _scan(self, projection: str, field: bytes) -> AsyncIterator[tuple[str, str]]:
        """(DLQ id, value of ``field``) of every entry, read in pages."""
        after = "-"
        while rows := await self.redis.xrange(self.keys.dlq(projection), min=after, count=1000):
            for dlq_id, fields in rows:
                yield _text(dlq_id), _text(fields.get(field, b""))
            after = f"({_text(rows[-1][0])}"

    async def list(self, projection: str, ids: list[str] | None = None) -> list[DeadLetter]:
        """Parked entries of ``projection`` in the order they were parked (only ``ids``)."""
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
            head = meta.get("head", "")
            letters.append(
                DeadLetter(
                    dlq_id=did,
                    projection=meta.get("projection", projection),
                    partition=int(meta.get("partition", "0")),
                    entry_id=meta.get("entry_id", ""),
                    error=meta.get("error", "") or (f"parked behind {head}" if head else ""),
                    attempts=int(meta.get("attempts", "0")),
                    dead_at=meta.get("at", ""),
                    fields=original,
                    sequence=meta.get("sequence", ""),
                    head=head,
                )
            )
        return letters

    async def sequences(
        self, projection: str, ids: list[str] | None = None
    ) -> list[ParkedSequence]:
        """Parked sequences of ``projection``, oldest head first; each in log order.

        With ``ids``, only the sequences holding one of those DLQ ids (whole sequences:
        a part of a sequence cannot be re-driven without what comes before it).
        """
        grouped: dict[str, list[DeadLetter]] = {}
        for letter in await self.list(projection):
            key = letter.sequence or f"dlq:{letter.dlq_id}"
            grouped.setdefault(key, []).append(letter)
        chosen = [
            ParkedSequence(projection, key, letters)
            for key, letters in grouped.items()
            if not ids or any(letter.dlq_id in ids for letter in letters)
        ]
        return chosen

    async def projections(self) -> list[str]:
        """Names of the projections that have a dead-letter stream."""
        head = f"{self.keys.prefix}:dlq:{{"
        names = [
            _text(key)[len(head) : -1]
            async for key in self.redis.scan_iter(match=f"{head}*}}", _type="stream")
        ]
        return sorted(names)

    async def discard(self, projection: str, sequence: str) -> int:
        """Remove a parked sequence without applying it; returns how many entries it had.

        For a writer that parked entries it must take back (a rebuild whose switch failed
        after it parked its failures), not for operators: the entries' effects are lost.
        """
        letters = [letter for letter in await self.list(projection) if letter.sequence == sequence]
        for letter in letters:
            await self._remove(
                keys=self._keys(projection), args=[letter.dlq_id, letter.sequence, "discarded"]
            )
        return len(letters)

    async def withdraw(self, projection: str, dlq_ids: Sequence[str]) -> int:
        """Take back exactly these letters (not the rest of their sequences), keeping the
        parked-sequence bookkeeping true; returns how many were found.

        For a rebuild that parked its failures and then did not switch: the live view
        still has (or will dead-letter itself) those entries, and any letter the live
        runner parked in the same sequence stays.
        """
        letters = await self.list(projection, list(dlq_ids))
        for letter in letters:
            await self._remove(
                keys=self._keys(projection), args=[letter.dlq_id, letter.sequence, "discarded"]
            )
        return len(letters)

    async def _done(self, projection: str, letter: DeadLetter) -> None:
        await self._remove(
            keys=self._keys(projection), args=[letter.dlq_id, letter.sequence, "redriven"]
        )
        log.info(
            "dead_letter_redriven",
            projection=projection,
            partition=letter.partition,
            entry_id=letter.entry_id,
            event_id=letter.event_id,
            sequence=letter.sequence,
        )

    async def redrive(self, projection: Projection, letter: DeadLetter) -> None:
        """Decode and apply one parked entry again; on success remove it from the DLQ.

        Only the first entry left in its sequence may be re-driven (:class:`OutOfOrder`
        otherwise). Raises whatever decoding or applying raises; the entry then stays.
        """
        if letter.sequence:
            waiting = [
                other
                for other in await self.list(projection.name)
                if other.sequence == letter.sequence
            ]
            if waiting and waiting[0].dlq_id != letter.dlq_id:
                raise OutOfOrder(
                    f"{letter.dlq_id} waits behind {waiting[0].dlq_id} in {letter.sequence}"
                )
        event = decode_entry(letter.entry_id, letter.fields, letter.partition)
        await redrive_apply(projection, letter.partition, [event])
        await self._done(projection.name, letter)

    async def retry(self, projection: Projection, sequence: ParkedSequence) -> RetryOutcome:
        """Re-drive a sequence in order, entry by entry, until it is empty or one fails.

        Entries the runner parks behind the sequence meanwhile are re-driven too; the
        sequence ends (the runner applies its aggregate again) with its last entry.
        An entry that fails stays parked with everything behind it, in order.
        """
        done: list[DeadLetter] = []
        seen: set[str] = set()
        while True:
            letters = [
                letter
                for letter in await self.list(projection.name)
                if (letter.sequence or f"dlq:{letter.dlq_id}") == sequence.sequence
                and letter.dlq_id not in seen
            ]
            if not letters:
                return RetryOutcome(sequence.sequence, done)
            for letter in letters:
                try:
                    event = decode_entry(letter.entry_id, letter.fields, letter.partition)
                    await redrive_apply(projection, letter.partition, [event])
                except Exception as exc:
                    log.warning(
                        "dead_letter_redrive_failed",
                        projection=projection.name,
                        sequence=sequence.sequence,
                        entry_id=letter.entry_id,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    return RetryOutcome(
                        sequence.sequence, done, letter, f"{type(exc).__name__}: {exc}"
                    )
                await self._done(projection.name, letter)
                seen.add(letter.dlq_id)
                done.append(letter)
                try:
                    await self._advance(projection, letter)
                except Exception as exc:  # the entry is applied; the next entry moves it
                    log.warning(
                        "checkpoint_not_advanced",
                        projection=projection.name,
                        entry_id=letter.entry_id,
                        error=f"{type(exc).__name__}: {exc}",
                    )

    async def _advance(self, projection: Projection, letter: DeadLetter) -> None:
        """Move the view's checkpoint up to a re-driven entry when nothing before it in its
        partition is left to the live projector.

        A re-driven entry that was the last of its partition lies *past* the checkpoint
        (nothing after it was applied), so the view would hold an effect its checkpoint
        does not cover until the next entry comes (and ``verify`` would count it extra).
        When the group has nothing pending and has delivered the entry, every entry up to
        it was applied or parked (acked entries are one or the other), so the checkpoint
        may cover it; entries still parked there keep their own re-drive path.
        """
        advance = getattr(projection, "advance", None)
        if advance is None:
            return
        stream = self.keys.log(letter.partition)
        groups = await self.redis.xinfo_groups(stream)
        group = next((g for g in groups if _text(g["name"]) == projection.name), None)
        if group is None or int(group["pending"]):
            return
        delivered = _text(group["last-delivered-id"])
        if _stream_id(delivered) >= _stream_id(letter.entry_id):
            await advance(letter.partition, letter.entry_id)
