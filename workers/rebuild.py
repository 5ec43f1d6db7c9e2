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
from typing import Any, TextIO

import redis.asyncio as aioredis
import structlog

from events.codec import RecordedEvent, decode_entry, undecodable
from events.errors import MalformedEvent
from events.positions import parse_stream_id
from events.store import EventStore
from projections.base import Projection
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


@dataclass(slots=True)
class ReplayStats:
    events: int = 0
    malformed: int = 0
    failed: int = 0
    read: dict[int, int] = field(default_factory=dict)
    """Entries read per partition (from the start: the group's ``entries-read`` there)."""


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


async def _apply(
    projection: Projection,
    partition: int,
    events: list[RecordedEvent],
    stats: ReplayStats,
    retries: int,
) -> None:
    """Apply a batch; wait out a sink that is down; isolate and skip an entry that cannot be
    applied (the live runner dead-letters the same entry)."""
    attempt = 0
    while True:
        try:
            await projection.apply(partition, events)
            return
        except Exception as exc:
            if is_sink_error(exc):
                attempt += 1
                if attempt > retries:
                    raise
                log.warning("rebuild_sink_unavailable", error=str(exc), attempt=attempt)
                await asyncio.sleep(min(0.2 * 2 ** min(attempt, 6), 5.0))
                continue
            if len(events) == 1:
                stats.failed += 1
                log.error(
                    "rebuild_entry_failed",
                    partition=partition,
                    entry_id=events[0].entry_id,
                    event_id=events[0].id,
                    error=f"{type(exc).__name__}: {exc}",
                )
                return
            for event in events:
                await _apply(projection, partition, [event], stats, retries)
            return


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
) -> str:
    """Apply the entries of ``partition`` in ``(after, until]`` (``until=None``: to the end as
    read); returns the last entry id applied (or ``after``). Reads the next batch while the
    current one is applied."""
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
            if more:
                pending = asyncio.ensure_future(read(rows[-1][0]))
            events: list[RecordedEvent] = []
            for entry_id, fields in rows:
                try:
                    events.append(decode_entry(entry_id, fields, partition))
                except MalformedEvent as exc:
                    if getattr(projection, "records_raw", False):  # as the live runner does
                        events.append(undecodable(entry_id, fields, partition, exc))  # type: ignore[arg-type]
                        continue
                    stats.malformed += 1
                    log.warning("rebuild_entry_malformed", partition=partition, error=str(exc))
            if events:
                await _apply(projection, partition, events, stats, retries)
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
) -> None:
    """Replay every partition from ``positions`` (updated in place), concurrently.

    ``until`` bounds each partition (a missing or ``None`` bound there: nothing to do)."""

    async def one(p: int) -> None:
        bound: str | None = None
        if until is not None:
            bound = until.get(p)
            if bound is None or parse_stream_id(bound) <= parse_stream_id(positions[p]):
                return
        positions[p] = await replay_partition(
            store, projection, p, positions[p], bound, batch, stats, progress, retries
        )

    await asyncio.gather(*(one(p) for p in sorted(positions)))


async def backlog(store: EventStore, positions: dict[int, str], cap: int) -> int:
    """How many entries are after ``positions`` (counted up to ``cap`` per partition)."""
    total = 0
    for p, after in positions.items():
        total += len(await store.redis.xrange(store.keys.log(p), min=f"({after}", count=cap))
    return total


# -- the rebuild -----------------------------------------------------------------------------


class _KeepAlive:
    """Refreshes the rebuild lock (and the pause, while set) until stopped."""

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
                if not await self.pointers.refresh_lock(
                    self.name, self.holder, self.opts.lock_ttl_ms
                ):
                    self.lost = True
                    log.error("rebuild_lock_lost", view=self.name)
                if self.pause_token is not None:
                    await self.pointers.refresh_pause(
                        self.name, self.pause_token, self.opts.pause_ttl_ms
                    )
            except Exception as exc:  # keep refreshing through a Redis hiccup
                log.warning("rebuild_keepalive_error", view=self.name, error=str(exc))

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
    """Rebuild view ``name`` into a new version and switch readers and projector to it."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r} (known: {', '.join(VIEWS)})")
    opts = options or RebuildOptions()
    catchup = opts.catchup or 4 * opts.batch
    progress = progress or Progress(name)
    redis = aioredis.Redis.from_url(settings.redis.url)
    store = EventStore(redis, settings.redis.keys)
    pointers = ViewPointers(redis, settings.redis.prefix)
    started = time.monotonic()
    try:
        holder = await pointers.lock(name, opts.lock_ttl_ms, opts.lock_wait_s)
        keeper = _KeepAlive(pointers, name, holder, opts)
        try:
            dropped = await drop_leftovers(settings, pointers, name)
            version = new_version()
            await pointers.register(name, version)
            log.info("rebuild_started", view=name, version=version)
            stats = ReplayStats()
            positions = {p: "0-0" for p in range(store.keys.partitions)}
            async with open_view(factory_for(name), settings, version) as projection:
                await projection.setup()
                progress.start(await store.count())
                await replay(store, projection, positions, opts.batch, stats, progress)
                for _ in range(opts.max_rounds):
                    left = await backlog(store, positions, catchup + 1)
                    if left <= catchup:
                        break
                    progress.set_phase("catch-up", progress.done + left)
                    await replay(store, projection, positions, opts.batch, stats, progress)
                previous = await _switch(
                    store,
                    pointers,
                    keeper,
                    projection,
                    name,
                    version,
                    positions,
                    stats,
                    opts,
                    progress,
                )
            await pointers.unregister(name, version)
            handed_over = await hand_over(store, name, positions, stats.read)
            progress.set_phase("switched")
            progress.finish()
            if opts.drop_old:
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
        dropped=dropped,
        handed_over=handed_over,
    )
    return report


async def _switch(
    store: EventStore,
    pointers: ViewPointers,
    keeper: _KeepAlive,
    projection: Projection,
    name: str,
    version: str,
    positions: dict[int, str],
    stats: ReplayStats,
    opts: RebuildOptions,
    progress: Progress,
) -> str:
    """Pause the live view, replay up to the heads read *after* pausing, switch; returns the
    replaced version. Retried if the pause ran out before the switch."""
    while True:
        old = await pointers.current(name)
        token = secrets.token_hex(8)
        await pointers.redis.set(pointers.key(name, ":pause"), token, px=opts.pause_ttl_ms)
        keeper.pause_token = token
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
            )
            if await pointers.switch(name, version, token):
                log.info("view_switched", view=name, old=label(old), new=version)
                return old
            log.warning("rebuild_pause_expired", view=name, retrying=True)
        finally:
            keeper.pause_token = None
            await pointers.unpause(name, token)


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
    """Rebuild ``names`` one after the other (each switches as soon as it is done)."""
    reports = []
    for name in names:
        progress = Progress(name, stream=progress_stream, tty=tty, enabled=not quiet)
        reports.append(await rebuild_view(settings, name, options, progress))
    return reports


__all__ = [
    "BASE",
    "Progress",
    "RebuildOptions",
    "RebuildReport",
    "rebuild_view",
    "rebuild_views",
    "replay",
]
