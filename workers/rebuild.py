"""Rebuild a view from the log into a new version and switch to it, with no downtime.

Steps (one view at a time, under the view's rebuild lock):

1. Drop what the previous rebuild kept (the version it replaced) and what a killed rebuild
   or verify left behind (versions registered but never switched to).
2. Register a new version id, build the projection on it (``setup()``), and replay every
   partition from the start in large batches, partitions concurrently, with the same
   decoding (and upcasting) as the live path. The live view keeps serving and updating.
3. Catch up with the live tail in rounds until fewer than ``catchup`` entries are left.
4. Pause the live projector of this view (:mod:`workers.views`), read the heads, replay up
   to them, and switch the pointer in one script that checks the pause is still ours; then
   lift the pause. The live consumer group goes on into the new version: entries it already
   passed are at or before the new version's checkpoints and are skipped there.
   Then hand the group the new version's position: where the group is *behind* it (a live
   projector that lagged or was down), ``XGROUP SETID`` moves it forward, with the matching
   ``ENTRIESREAD`` so ``streamshop lag`` stays exact. Only forward, and only past entries
   the new version holds: entries already delivered stay pending and are re-applied as
   no-ops, the runner re-reads the group's position when a wake-up brings nothing, and the
   old version (frozen from the switch on) is no longer read.
5. Keep the old version for a rollback until ``--drop-old`` or the next rebuild.

All or nothing: an entry that cannot be decoded or applied aborts the rebuild before the
switch (:class:`RebuildAborted`, naming the entry); the live view, its pointer and its
consumer group stay as they were and the new version is dropped. With ``park_failures``
the rebuild switches instead, with each failed entry dead-lettered and every later entry
of the same aggregate parked behind it, in order, unapplied (a sequenced dead letter, as
the live runner keeps them). The dead letters are written under the pause, *before* the
switch: a rebuild killed between the two leaves a visible, re-drivable dead letter, never a
silently missing entry. A lost rebuild lock (another rebuild may now own the view) aborts
too: checked between batches and once more, by refreshing it, right before the switch.

A rebuild killed at any point leaves the live view as it was (the pointer only moves in
step 4, the pause expires on its own) and its half-built version is dropped by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

import structlog

from events.codec import RecordedEvent, decode_entry, undecodable
from events.errors import MalformedEvent
from events.positions import parse_stream_id
from events.store import EventStore
from projections.base import Projection
from workers.dlq import DeadLetters
from workers.registry import factory_for
from workers.runner import is_sink_error
from workers.views import (
    BASE,
    VIEWS,
    ViewPointers,
    drop_version,
    label,
    new_version,
    open_view,
)

log = structlog.get_logger("workers.rebuild")


@dataclass(frozen=True, slots=True)
class RebuildOptions:
    batch: int = 2000
    """Entries per read and per ``apply`` (one bulk write)."""
    drop_old: bool = False
    """Drop the replaced version right after the switch (else it is kept until next time)."""
    catchup: int = 0
    """Pause for the switch once fewer entries than this are left (0: four batches)."""
    max_rounds: int = 20
    """Catch-up rounds before pausing anyway (a log growing faster than the replay)."""
    pause_ttl_ms: int = 10_000
    lock_ttl_ms: int = 10_000
    lock_wait_s: float = 30.0
    drop_grace_s: float = 2.0
    """Wait before dropping a replaced version: applies that read the pointer just before
    the switch may still be writing to it."""
    sink_retries: int = 30
    park_failures: bool = False
    """Switch even if entries fail, with them parked as sequenced dead letters (else: abort)."""


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


class RebuildAborted(RuntimeError):
    """The rebuild stopped before its switch: the live view, its pointer and its consumer
    group are as they were, and the new version was dropped (or is left registered, so the
    next run drops it)."""

    def __init__(
        self,
        view: str,
        reason: str,
        live: str,
        version: str,
        failures: Sequence[FailedEntry] = (),
        shadow_dropped: bool = True,
    ) -> None:
        super().__init__(f"rebuild of {view} aborted: {reason}")
        self.view = view
        self.reason = reason
        self.live = live
        self.version = version
        self.failures = list(failures)
        self.shadow_dropped = shadow_dropped
        self.completed: list[RebuildReport] = []
        """Views of the same ``rebuild_views`` call that switched before this one aborted."""


class _Abort(Exception):
    """Raised inside the replay to stop the rebuild (turned into :class:`RebuildAborted`)."""


class EntryFailed(_Abort):
    def __init__(self, failure: FailedEntry) -> None:
        super().__init__(failure.describe())
        self.failure = failure


class LockLost(_Abort):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"the rebuild lock of {name} was lost (it expired or was taken over; another "
            "rebuild may own the view now)"
        )


@dataclass(slots=True)
class RebuildReport:
    view: str
    version: str
    previous: str
    events: int
    seconds: float
    malformed: int = 0
    failed: int = 0
    dropped: list[str] = field(default_factory=list)
    handed_over: list[int] = field(default_factory=list)
    """Partitions whose live consumer group was moved forward to the new version's position."""
    parked: list[FailedEntry] = field(default_factory=list)
    """``park_failures``: the failed entries and those parked behind them, dead-lettered."""
    dead_letters: list[str] = field(default_factory=list)
    """Their ids in the view's dead-letter stream, in the same order."""

    @property
    def events_per_s(self) -> float:
        return round(self.events / self.seconds, 1) if self.seconds > 0 else 0.0


class Progress:
    """Events done / total, events/s and ETA: a bar on a terminal, log lines otherwise."""

    def __init__(
        self,
        view: str,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 2.0,
        enabled: bool = True,
    ) -> None:
        self.view = view
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if not self.tty else 0.1
        self.enabled = enabled
        self.total = 0
        self.done = 0
        self.phase = "replay"
        self.started = time.monotonic()
        self._shown = 0.0

    def start(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.show(force=True)

    def set_phase(self, phase: str, total: int | None = None) -> None:
        self.phase = phase
        if total is not None:
            self.total = max(total, self.done)
        self.show(force=True)

    def add(self, count: int) -> None:
        self.done += count
        self.total = max(self.total, self.done)
        self.show()

    def figures(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        return {
            "done": self.done,
            "total": self.total,
            "events_per_s": round(rate, 1),
            "eta_s": round(left / rate, 1) if rate > 0 else None,
        }

    def show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown < self.interval:
            return
        self._shown = now
        f = self.figures()
        if not self.tty:
            log.info("rebuild_progress", view=self.view, phase=self.phase, **f)
            return
        width = 30
        share = f["done"] / f["total"] if f["total"] else 1.0
        bar = "#" * int(share * width) + "-" * (width - int(share * width))
        eta = "--:--" if f["eta_s"] is None else _clock(f["eta_s"])
        self.stream.write(
            f"\r{self.view:<11} [{bar}] {share:6.1%} {f['done']:>10,}/{f['total']:<10,} "
            f"{f['events_per_s']:>9,.0f} ev/s  ETA {eta}  {self.phase:<10}"
        )
        self.stream.flush()

    def finish(self) -> None:
        self.show(force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# -- replaying the log -----------------------------------------------------------------------


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _apply_batch(
    projection: Projection,
    partition: int,
    events: list[RecordedEvent],
    retries: int,
    keeper: _KeepAlive | None,
) -> Exception | None:
    """Apply a batch, waiting out a sink that is down; returns an entry-level failure."""
    attempt = 0
    while True:
        if keeper is not None:
            keeper.check()
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
    keeper: _KeepAlive | None = None,
) -> None:
    """Apply a batch; if an entry fails, isolate it (one by one, in order) and record it.

    After a failure, with ``park``, the later entries of its aggregate are parked, not applied.
    """
    if not events:
        return
    failure = await _apply_batch(projection, partition, events, retries, keeper)
    if failure is None:
        return
    if len(events) > 1:
        log.warning("rebuild_batch_failed", count=len(events), error=_error(failure))
        failure = None
    for event in events:
        fields = raw.get(event.entry_id, {})
        if (head := stats.behind(event.aggregate)) is not None:
            stats.record(
                FailedEntry.of(partition, event.entry_id, fields, f"parked behind {head}", head)
            )
            continue
        if failure is None:
            failure = await _apply_batch(projection, partition, [event], retries, keeper)
        if failure is not None:
            stats.record(FailedEntry.of(partition, event.entry_id, fields, _error(failure)))
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
    keeper: _KeepAlive | None = None,
) -> str:
    """Apply the entries of ``partition`` in ``(after, until]`` (``until=None``: to the end as
    read); returns the last entry id applied (or ``after``). Reads the next batch while the
    current one is applied. An entry that fails goes to ``stats`` (which may raise)."""
    limit = parse_stream_id(until) if until is not None else None

    async def read(start: str) -> list[tuple[str, dict[bytes, bytes]]]:
        return await store.read_raw(partition, start, batch)

    pending: asyncio.Task[list[tuple[str, dict[bytes, bytes]]]] | None = asyncio.ensure_future(
        read(after)
    )
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
            if keeper is not None:
                keeper.check()
            if more:
                pending = asyncio.ensure_future(read(rows[-1][0]))
            events: list[RecordedEvent] = []
            raw: dict[str, dict[bytes, bytes]] = {}
            for entry_id, fields in rows:
                raw[entry_id] = fields
                aggregate = fields.get(b"aggregate", b"").decode(errors="replace")
                if (head := stats.behind(aggregate)) is not None:
                    stats.record(
                        FailedEntry.of(partition, entry_id, fields, f"parked behind {head}", head)
                    )
                    continue
                try:
                    events.append(decode_entry(entry_id, fields, partition))
                except MalformedEvent as exc:
                    if getattr(projection, "records_raw", False):  # as the live runner does
                        events.append(undecodable(entry_id, fields, partition, exc))  # type: ignore[arg-type]
                        continue
                    # What came before it is applied first, so failures stay in log order
                    # (and if one of those fails, this entry is parked behind it).
                    await _apply(projection, partition, events, raw, stats, retries, keeper)
                    events = []
                    if (head := stats.behind(aggregate)) is not None:
                        error = f"parked behind {head}"
                    else:
                        stats.malformed += 1
                        error = _error(exc)
                    stats.record(FailedEntry.of(partition, entry_id, fields, error, head))
            await _apply(projection, partition, events, raw, stats, retries, keeper)
            after = rows[-1][0]
            stats.events += len(rows)
            stats.read[partition] = stats.read.get(partition, 0) + len(rows)
            if progress is not None:
                progress.add(len(rows))
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
    return after


async def replay(
    store: EventStore,
    projection: Projection,
    positions: dict[int, str],
    batch: int,
    stats: ReplayStats,
    progress: Progress | None = None,
    until: dict[int, str | None] | None = None,
    retries: int = 30,
    keeper: _KeepAlive | None = None,
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
            store, projection, p, positions[p], bound, batch, stats, progress, retries, keeper
        )

    tasks = [asyncio.ensure_future(one(p)) for p in sorted(positions)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def backlog(store: EventStore, positions: dict[int, str], cap: int) -> int:
    """How many entries are after ``positions`` (counted up to ``cap`` per partition)."""
    total = 0
    for p, after in positions.items():
        total += len(await store.redis.xrange(store.keys.log(p), min=f"({after}", count=cap))
    return total


# -- the rebuild -----------------------------------------------------------------------------


class _KeepAlive:
    """Refreshes the rebuild lock (and the pause, while set) until stopped.

    A refresh that finds the lock no longer ours marks it :attr:`lost` for good: the rebuild
    stops at its next :meth:`check` (between batches) and never switches.
    """

    def __init__(self, pointers: ViewPointers, name: str, holder: str, opts: RebuildOptions):
        self.pointers, self.name, self.holder, self.opts = pointers, name, holder, opts
        self.pause_token: str | None = None
        self.lost = False
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        every = min(self.opts.lock_ttl_ms, self.opts.pause_ttl_ms) / 3000
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
                if self.pause_token is not None:
                    await self.pointers.refresh_pause(
                        self.name, self.pause_token, self.opts.pause_ttl_ms
                    )
            except Exception as exc:  # keep refreshing through a Redis hiccup
                log.warning("rebuild_keepalive_error", view=self.name, error=str(exc))

    async def refresh(self) -> bool:
        """Extend the lock now; ``False`` (and :attr:`lost` from then on) if it is not ours."""
        if not self.lost and not await self.pointers.refresh_lock(
            self.name, self.holder, self.opts.lock_ttl_ms
        ):
            self.lost = True
            log.error("rebuild_lock_lost", view=self.name, holder=self.holder)
        return not self.lost

    def check(self) -> None:
        """Raise :class:`LockLost` once the lock is known to be lost."""
        if self.lost:
            raise LockLost(self.name)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def drop_leftovers(settings: Any, pointers: ViewPointers, name: str) -> list[str]:
    """Drop the version the last switch kept and any registered but never switched to."""
    dropped: list[str] = []
    live = await pointers.current(name)
    previous = await pointers.previous(name)
    if previous is not None and previous != live:
        await drop_version(settings, name, previous)
        dropped.append(label(previous))
    if previous is not None:
        await pointers.forget_previous(name)
    for version in sorted(await pointers.registered(name)):
        if version != live:
            await drop_version(settings, name, version)
            dropped.append(label(version))
        await pointers.unregister(name, version)
    if dropped:
        log.info("view_versions_dropped", view=name, versions=dropped)
    return dropped


async def rebuild_view(
    settings: Any,
    name: str,
    options: RebuildOptions | None = None,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild view ``name`` into a new version and switch readers and projector to it.

    Raises :class:`RebuildAborted` (nothing switched) when an entry fails without
    ``park_failures``, when the lock is lost, or when anything else stops it before the switch.
    """
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r} (known: {', '.join(VIEWS)})")
    opts = options or RebuildOptions()
    catchup = opts.catchup or 4 * opts.batch
    progress = progress or Progress(name)
    redis = settings.redis.connect()
    store = EventStore(redis, settings.redis.keys)
    pointers = ViewPointers(redis, settings.redis.prefix)
    dead = DeadLetters(redis, settings.redis.keys)
    started = time.monotonic()
    stats = ReplayStats(on_failure="park" if opts.park_failures else "abort")
    retries = opts.sink_retries
    try:
        holder = await pointers.lock(name, opts.lock_ttl_ms, opts.lock_wait_s)
        keeper = _KeepAlive(pointers, name, holder, opts)
        try:
            dropped = await drop_leftovers(settings, pointers, name)
            live = await pointers.current(name)
            version = new_version()
            await pointers.register(name, version)
            log.info("rebuild_started", view=name, version=version, on_failure=stats.on_failure)
            positions = {p: "0-0" for p in range(store.keys.partitions)}
            try:
                async with open_view(factory_for(name), settings, version) as projection:
                    await projection.setup()
                    progress.start(await store.count())
                    await replay(
                        store,
                        projection,
                        positions,
                        opts.batch,
                        stats,
                        progress,
                        retries=retries,
                        keeper=keeper,
                    )
                    for _ in range(opts.max_rounds):
                        left = await backlog(store, positions, catchup + 1)
                        if left <= catchup:
                            break
                        progress.set_phase("catch-up", progress.done + left)
                        await replay(
                            store,
                            projection,
                            positions,
                            opts.batch,
                            stats,
                            progress,
                            retries=retries,
                            keeper=keeper,
                        )
                    previous, dead_letters = await _switch(
                        store,
                        pointers,
                        keeper,
                        dead,
                        projection,
                        name,
                        version,
                        positions,
                        stats,
                        opts,
                        progress,
                    )
            except Exception as exc:
                progress.finish()
                raise await _aborted(settings, pointers, name, live, version, stats, exc) from exc
            await pointers.unregister(name, version)
            handed_over = await hand_over(store, name, positions, stats.read)
            progress.set_phase("switched")
            progress.finish()
            if opts.drop_old and keeper.lost:
                log.warning("rebuild_drop_old_skipped", view=name, reason="rebuild lock lost")
            elif opts.drop_old:
                await asyncio.sleep(opts.drop_grace_s)
                await drop_version(settings, name, previous)
                await pointers.forget_previous(name)
                dropped.append(label(previous))
        finally:
            await keeper.stop()
            await pointers.unlock(name, holder)
    finally:
        await redis.aclose()
    report = RebuildReport(
        view=name,
        version=version,
        previous=label(previous),
        events=stats.events,
        seconds=round(time.monotonic() - started, 3),
        malformed=stats.malformed,
        failed=stats.failed,
        dropped=dropped,
        handed_over=handed_over,
        parked=list(stats.failures),
        dead_letters=dead_letters,
    )
    log.info(
        "rebuild_done",
        view=name,
        version=version,
        previous=report.previous,
        events=report.events,
        seconds=report.seconds,
        events_per_s=report.events_per_s,
        malformed=report.malformed,
        failed=report.failed,
        parked=stats.parked,
        dead_letters=dead_letters,
        dropped=dropped,
        handed_over=handed_over,
    )
    return report


async def _aborted(
    settings: Any,
    pointers: ViewPointers,
    name: str,
    live: str,
    version: str,
    stats: ReplayStats,
    exc: Exception,
) -> RebuildAborted:
    """Drop the never-switched ``version`` and say why the rebuild stopped (re-raises ``exc``
    itself in the one case where the pointer did move: then it is not an abort)."""
    if isinstance(exc, _Abort):
        reason = str(exc)
    else:
        log.error("rebuild_error", view=name, version=version, exc_info=exc)
        reason = _error(exc)
    failures = [f for f in stats.failures if f.behind is None]
    shadow_dropped = False
    try:
        if await pointers.current(name) == version:
            # A switch call that failed on the way back may still have switched: not an abort.
            log.error("rebuild_switched_despite_error", view=name, version=version)
            raise exc
        await drop_version(settings, name, version)
        await pointers.unregister(name, version)
        shadow_dropped = True
    except Exception as drop_error:  # still registered: the next rebuild drops it
        if drop_error is exc:
            raise
        log.warning("rebuild_shadow_left", view=name, version=version, error=_error(drop_error))
    log.error(
        "rebuild_aborted",
        view=name,
        reason=reason,
        live=label(live),
        version=version,
        shadow_dropped=shadow_dropped,
    )
    return RebuildAborted(name, reason, label(live), version, failures, shadow_dropped)


async def _switch(
    store: EventStore,
    pointers: ViewPointers,
    keeper: _KeepAlive,
    dead: DeadLetters,
    projection: Projection,
    name: str,
    version: str,
    positions: dict[int, str],
    stats: ReplayStats,
    opts: RebuildOptions,
    progress: Progress,
) -> tuple[str, list[str]]:
    """Pause the live view, replay up to the heads read *after* pausing, dead-letter what
    failed, switch; returns the replaced version and the dead letters' ids. Retried if the
    pause ran out before the switch."""
    dead_letters: list[str] = []
    while True:
        old = await pointers.current(name)
        token = secrets.token_hex(8)
        await pointers.redis.set(pointers.key(name, ":pause"), token, px=opts.pause_ttl_ms)
        keeper.pause_token = token
        switching = False
        try:
            heads = await store.heads()
            progress.set_phase("switching")
            await replay(
                store,
                projection,
                positions,
                opts.batch,
                stats,
                progress,
                until=heads,
                retries=opts.sink_retries,
                keeper=keeper,
            )
            for failure in stats.failures[len(dead_letters) :]:
                dead_letters.append(await park(dead, name, failure))
            if not await keeper.refresh():
                keeper.check()
            switching = True
            if await pointers.switch(name, version, token):
                log.info("view_switched", view=name, old=label(old), new=version)
                return old, dead_letters
            switching = False
            log.warning("rebuild_pause_expired", view=name, retrying=True)
        except BaseException:
            if dead_letters and not switching:
                with contextlib.suppress(Exception):
                    await _withdraw(dead, name, dead_letters)
                    dead_letters = []
            if dead_letters:
                # Perhaps switched: a dead letter too many is visible, a lost entry is not.
                log.warning("rebuild_dead_letters_kept", view=name, dlq_ids=dead_letters)
            raise
        finally:
            keeper.pause_token = None
            await pointers.unpause(name, token)


# -- the dead letters of a rebuild with park_failures ----------------------------------------


async def park(dead: DeadLetters, view: str, failure: FailedEntry) -> str:
    """Dead-letter one entry of a rebuild for ``view``: a failed entry heads the sequence of
    its aggregate, the later ones wait behind it (``failure.behind``). Returns the DLQ id.

    ``DeadLetters.put`` parks an entry whose sequence is parked already behind its head, so
    the followers, put after their head, join its sequence in log order.
    """
    if failure.behind is None:
        return await dead.put(
            view, failure.partition, failure.entry_id, failure.fields, failure.error, 1
        )
    return await dead.put(
        view,
        failure.partition,
        failure.entry_id,
        failure.fields,
        f"parked behind {failure.behind}",
        0,
    )


async def _withdraw(dead: DeadLetters, view: str, dlq_ids: list[str]) -> None:
    """Take back the dead letters of a rebuild that then did not switch (the live view
    still has, or will dead-letter itself, those entries)."""
    await dead.withdraw(view, dlq_ids)
    log.info("rebuild_dead_letters_withdrawn", view=view, dlq_ids=dlq_ids)


_HAND_OVER = """
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return 0 end
local function id(s)
  local dash = string.find(s, '-', 1, true)
  return tonumber(string.sub(s, 1, dash - 1)), tonumber(string.sub(s, dash + 1))
end
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == ARGV[1] then
    local ms, seq = id(last)
    local ms2, seq2 = id(ARGV[2])
    if ms < ms2 or (ms == ms2 and seq < seq2) then
      redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2], 'ENTRIESREAD', ARGV[3])
      return 1
    end
    return 0
  end
end
return 0
"""
"""KEYS: a partition stream. ARGV: group, the new version's position there, entries up to it.
Moves the group's last-delivered id forward to the position, never back; no group, no-op."""


async def hand_over(
    store: EventStore, name: str, positions: dict[int, str], read: dict[int, int]
) -> list[int]:
    """Move the live consumer group of ``name`` forward to the new version's positions."""
    script = store.redis.register_script(_HAND_OVER)
    moved = []
    for p, position in sorted(positions.items()):
        if position in ("0", "0-0"):
            continue
        if await script(keys=[store.keys.log(p)], args=[name, position, read.get(p, 0)]):
            moved.append(p)
    if moved:
        log.info("consumer_group_handed_over", view=name, partitions=moved)
    return moved


async def rebuild_views(
    settings: Any,
    names: Sequence[str],
    options: RebuildOptions | None = None,
    progress_stream: TextIO | None = None,
    tty: bool | None = None,
    quiet: bool = False,
) -> list[RebuildReport]:
    """Rebuild ``names`` one after the other (each switches as soon as it is done); the
    first abort stops the rest (:attr:`RebuildAborted.completed`: those that switched)."""
    reports: list[RebuildReport] = []
    for name in names:
        progress = Progress(name, stream=progress_stream, tty=tty, enabled=not quiet)
        try:
            reports.append(await rebuild_view(settings, name, options, progress))
        except RebuildAborted as exc:
            exc.completed = reports
            raise
    return reports


__all__ = [
    "BASE",
    "FailedEntry",
    "Progress",
    "RebuildAborted",
    "RebuildOptions",
    "RebuildReport",
    "rebuild_view",
    "rebuild_views",
    "replay",
]
