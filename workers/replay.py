"""The replay engine shared by rebuild and verify: fold a range of the log into a
projection, partitions concurrently, with the live path's decoding (and upcasting).

An entry that cannot be decoded or applied is isolated (the batch is re-applied one entry
at a time, in order) and handled as the caller's :data:`OnFailure` says: skipped, abort the
replay (:class:`EntryFailed`), or parked with every later entry of its aggregate behind it.
A sink that is down is waited out (bounded retries); a :class:`Fence` lets the caller stop
the replay between batches (a rebuild whose lock was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from events.codec import RecordedEvent, decode_entry, undecodable
from events.errors import MalformedEvent
from events.positions import parse_stream_id
from events.store import EventStore
from projections.base import Projection
from workers.progress import Progress
from workers.runner import is_sink_error

log = structlog.get_logger("workers.rebuild")


class Fence(Protocol):
    """What a replay asks between batches whether it may go on."""

    def check(self) -> None:
        """Raise (a :class:`ReplayAborted`) to stop the replay."""
        ...


class ReplayAborted(Exception):
    """Raised inside a replay to stop it (a rebuild turns it into ``RebuildAborted``)."""


class EntryFailed(ReplayAborted):
    def __init__(self, failure: FailedEntry) -> None:
        super().__init__(failure.describe())
        self.failure = failure


OnFailure = Literal["skip", "abort", "park"]
"""What a replay does with an entry it cannot decode or apply: ``skip`` it (and go on),
``abort`` (raise :class:`EntryFailed`), or ``park`` it and every later entry of its aggregate."""


@dataclass(frozen=True, slots=True)
class FailedEntry:
    """An entry a replay could not decode or apply, or (``behind`` set) one parked behind such
    an entry of the same aggregate."""

    partition: int
    entry_id: str
    event_id: str
    type: str
    aggregate: str
    error: str
    fields: dict[bytes, bytes]
    """The log entry's fields, unchanged (what a dead letter keeps)."""
    behind: str | None = None
    """The entry id of the failed entry this one waits behind (``None``: it failed itself)."""

    @classmethod
    def of(
        cls,
        partition: int,
        entry_id: str,
        fields: dict[bytes, bytes],
        error: str,
        behind: str | None = None,
    ) -> FailedEntry:
        def text(name: bytes) -> str:
            return fields.get(name, b"").decode(errors="replace")

        return cls(
            partition=partition,
            entry_id=entry_id,
            event_id=text(b"id"),
            type=text(b"type"),
            aggregate=text(b"aggregate"),
            error=error,
            fields=fields,
            behind=behind,
        )

    def describe(self) -> str:
        return (
            f"entry {self.entry_id} (partition {self.partition}, {self.type or '?'}, "
            f"{self.aggregate or '?'}, event {self.event_id or '?'}): {self.error}"
        )


@dataclass(slots=True)
class ReplayStats:
    events: int = 0
    malformed: int = 0
    failed: int = 0
    parked: int = 0
    read: dict[int, int] = field(default_factory=dict)
    """Entries read per partition (from the start: the group's ``entries-read`` there)."""
    on_failure: OnFailure = "skip"
    failures: list[FailedEntry] = field(default_factory=list)
    """Failed and parked entries in the order met: per aggregate, log order."""
    blocked: dict[str, str] = field(default_factory=dict)
    """``park``: aggregate → entry id of its failed entry; its later entries are parked."""

    def behind(self, aggregate: str | None) -> str | None:
        """The failed entry that ``aggregate``'s entries are parked behind, if any."""
        return self.blocked.get(aggregate) if aggregate and self.blocked else None

    def record(self, failure: FailedEntry) -> None:
        """Count ``failure``; with ``abort`` raise, with ``park`` block its aggregate."""
        self.failures.append(failure)
        if failure.behind is not None:
            self.parked += 1
            log.warning(
                "rebuild_entry_parked",
                partition=failure.partition,
                entry_id=failure.entry_id,
                aggregate=failure.aggregate,
                behind=failure.behind,
            )
            return
        self.failed += 1
        log.error(
            "rebuild_entry_failed",
            partition=failure.partition,
            entry_id=failure.entry_id,
            event_id=failure.event_id,
            type=failure.type,
            aggregate=failure.aggregate,
            error=failure.error,
        )
        if self.on_failure == "abort":
            raise EntryFailed(failure)
        if self.on_failure == "park" and failure.aggregate:
            self.blocked.setdefault(failure.aggregate, failure.entry_id)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _apply_batch(
    projection: Projection,
    partition: int,
    events: list[RecordedEvent],
    retries: int,
    fence: Fence | None,
) -> Exception | None:
    """Apply a batch, waiting out a sink that is down; returns an entry-level failure."""
    attempt = 0
    while True:
        if fence is not None:
            fence.check()
        try:
            await projection.apply(partition, events)
            return None
        except Exception as exc:
            if not is_sink_error(exc):
                return exc
            attempt += 1
            if attempt > retries:
                raise
            log.warning("rebuild_sink_unavailable", error=str(exc), attempt=attempt)
            await asyncio.sleep(min(0.2 * 2 ** min(attempt, 6), 5.0))


async def _apply(
    projection: Projection,
    partition: int,
    events: list[RecordedEvent],
    raw: dict[str, dict[bytes, bytes]],
    stats: ReplayStats,
    retries: int,
    fence: Fence | None = None,
) -> None:
    """Apply a batch; if an entry fails, isolate it (one by one, in order) and record it.

    After a failure, with ``park``, the later entries of its aggregate are parked, not applied.
    """
    if not events:
        return
    failure = await _apply_batch(projection, partition, events, retries, fence)
    if failure is None:
        return
    if len(events) > 1:
        log.warning("rebuild_batch_failed", count=len(events), error=error_text(failure))
        failure = None
    for event in events:
        fields = raw.get(event.entry_id, {})
        if (head := stats.behind(event.aggregate)) is not None:
            stats.record(
                FailedEntry.of(partition, event.entry_id, fields, f"parked behind {head}", head)
            )
            continue
        if failure is None:
            failure = await _apply_batch(projection, partition, [event], retries, fence)
        if failure is not None:
            stats.record(FailedEntry.of(partition, event.entry_id, fields, error_text(failure)))
        failure = None


async def replay_partition(
    store: EventStore,
    projection: Projection,
    partition: int,
    after: str,
    until: str | None,
    batch: int,
    stats: ReplayStats,
    progress: Progress | None = None,
    retries: int = 30,
    fence: Fence | None = None,
) -> str:
    """Apply the entries of ``partition`` in ``(after, until]`` (``until=None``: to the end as
    read); returns the last entry id applied (or ``after``). An entry that fails goes to
    ``stats`` (which may raise).

    Three batches are in hand at once: the next one is read while the current one is
    decoded, and the current one is decoded while the previous one is applied. Decoding is
    this process's CPU and applying is mostly the store's, so on a machine with two cores
    they overlap instead of taking turns. Applies stay one at a time and in order, and
    whether an entry is parked is decided when its batch is applied, after everything
    before it.
    """
    limit = parse_stream_id(until) if until is not None else None

    async def read(start: str) -> list[tuple[str, dict[bytes, bytes]]]:
        return await store.read_raw(partition, start, batch)

    async def dispatch(rows: list[tuple[str, dict[bytes, bytes]]], decoded: list[Decoded]) -> None:
        events: list[RecordedEvent] = []
        raw: dict[str, dict[bytes, bytes]] = {}
        for (entry_id, fields), (aggregate, event) in zip(rows, decoded, strict=True):
            raw[entry_id] = fields
            if (head := stats.behind(aggregate)) is not None:
                stats.record(
                    FailedEntry.of(partition, entry_id, fields, f"parked behind {head}", head)
                )
                continue
            if not isinstance(event, MalformedEvent):
                events.append(event)
                continue
            # What came before it is applied first, so failures stay in log order (and if
            # one of those fails, this entry is parked behind it).
            await _apply(projection, partition, events, raw, stats, retries, fence)
            events = []
            if (head := stats.behind(aggregate)) is not None:
                error = f"parked behind {head}"
            else:
                stats.malformed += 1
                error = error_text(event)
            stats.record(FailedEntry.of(partition, entry_id, fields, error, head))
        await _apply(projection, partition, events, raw, stats, retries, fence)
        stats.events += len(rows)
        stats.read[partition] = stats.read.get(partition, 0) + len(rows)
        if progress is not None:
            progress.add(len(rows))

    keep_raw = bool(getattr(projection, "records_raw", False))  # as the live runner does
    pending: asyncio.Task[list[tuple[str, dict[bytes, bytes]]]] | None = asyncio.ensure_future(
        read(after)
    )
    applying: asyncio.Task[None] | None = None
    try:
        while pending is not None:
            rows = await pending
            pending = None
            more = len(rows) == batch
            if limit is not None:
                kept = [r for r in rows if parse_stream_id(r[0]) <= limit]
                more = more and len(kept) == len(rows)
                rows = kept
            if not rows:
                break
            if more:
                pending = asyncio.ensure_future(read(rows[-1][0]))
            decoded: list[Decoded] = []
            for start in range(0, len(rows), STEP):
                if start:
                    await asyncio.sleep(0)  # see STEP
                chunk = rows[start : start + STEP]
                decoded.extend(
                    _decode(entry_id, fields, partition, keep_raw) for entry_id, fields in chunk
                )
            if applying is not None:
                await applying
                applying = None
            if fence is not None:
                fence.check()
            applying = asyncio.ensure_future(dispatch(rows, decoded))
            after = rows[-1][0]
        if applying is not None:
            await applying
            applying = None
    finally:
        for task in (pending, applying):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
    return after


STEP = 250
"""Entries decoded per step of the event loop. Decoding has no I/O, so every partition
decoding a 2 000-entry batch in one step held the loop for about a second, and the
rebuild's lock and pause keep-alive, whose refresh takes a few loop turns, came close to
their TTL (see ``KeepAlive``)."""

Decoded = tuple[str, RecordedEvent | MalformedEvent]
"""An entry's aggregate and its event, or why it cannot be decoded."""


def _decode(entry_id: str, fields: dict[bytes, bytes], partition: int, keep_raw: bool) -> Decoded:
    aggregate = fields.get(b"aggregate", b"").decode(errors="replace")
    try:
        return aggregate, decode_entry(entry_id, fields, partition)
    except MalformedEvent as exc:
        if keep_raw:
            return aggregate, undecodable(entry_id, fields, partition, exc)  # type: ignore[return-value]
        return aggregate, exc


async def replay(
    store: EventStore,
    projection: Projection,
    positions: dict[int, str],
    batch: int,
    stats: ReplayStats,
    progress: Progress | None = None,
    until: dict[int, str | None] | None = None,
    retries: int = 30,
    fence: Fence | None = None,
) -> None:
    """Replay every partition from ``positions`` (updated in place), concurrently.

    ``until`` bounds each partition (a missing or ``None`` bound there: nothing to do). If one
    partition raises, the others are cancelled before the error goes on (so nothing writes to
    a version its rebuild is about to drop)."""

    async def one(p: int) -> None:
        bound: str | None = None
        if until is not None:
            bound = until.get(p)
            if bound is None or parse_stream_id(bound) <= parse_stream_id(positions[p]):
                return
        positions[p] = await replay_partition(
            store, projection, p, positions[p], bound, batch, stats, progress, retries, fence
        )

    await all_or_none([one(p) for p in sorted(positions)])


async def all_or_none(steps: Sequence[Awaitable[Any]]) -> list[Any]:
    """Run ``steps`` concurrently; if one raises, cancel the others and wait for them before
    the error goes on (so nothing writes to a version its rebuild is about to drop)."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def backlog(
    store: EventStore,
    positions: dict[int, str],
    cap: int,
    until: dict[int, str | None] | None = None,
) -> int:
    """How many entries are after ``positions`` (counted up to ``cap`` per partition), up to
    ``until`` where given (a partition whose bound is missing or ``None``: none)."""
    total = 0
    for p, after in positions.items():
        bound: str | None = None
        if until is not None:
            bound = until.get(p)
            if bound is None:
                continue
        total += len(await store.read_raw(p, after, cap, through=bound))
    return total


Target = Callable[[], Awaitable[dict[int, str | None]]]
"""Where a catch-up round replays to, read afresh each round (verify: the live checkpoints)."""


async def catch_up(
    store: EventStore,
    projection: Projection,
    positions: dict[int, str],
    batch: int,
    stats: ReplayStats,
    *,
    within: int,
    rounds: int,
    target: Target | None = None,
    progress: Progress | None = None,
    retries: int = 30,
    fence: Fence | None = None,
) -> None:
    """Replay in rounds toward a moving end (``target()``, or the log's end) until at most
    ``within`` entries are left or ``rounds`` are done: what is left then is small enough to
    replay under a short pause of the live projector."""
    for _ in range(rounds):
        until = None if target is None else await target()
        left = await backlog(store, positions, within + 1, until)
        if left <= within:
            return
        if progress is not None:
            progress.set_phase("catch-up", progress.done + left)
        await replay(
            store,
            projection,
            positions,
            batch,
            stats,
            progress,
            until=until,
            retries=retries,
            fence=fence,
        )
