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

This module is the orchestration (lock, versions, pause, switch, hand-over, dead letters);
folding the log into a projection is :mod:`workers.replay` (shared with ``verify``), and
the bar is :mod:`workers.progress`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog

from events.connection import RedisClient
from events.store import EventStore
from projections.base import Projection
from projections.read_models.bulk import BulkFold
from projections.read_models.projection import ReadModelsProjection
from projections.warehouse import WarehouseProjection
from projections.warehouse_bulk import GroupCommit
from workers.dlq import DeadLetters
from workers.progress import Progress
from workers.registry import factory_for
from workers.replay import (
    FailedEntry,
    ReplayAborted,
    ReplayStats,
    catch_up,
    error_text,
    replay,
)
from workers.replay_split import replay_split
from workers.runner import is_sink_error
from workers.views import (
    BASE,
    VIEWS,
    RebuildBusy,
    ViewPointers,
    drop_version,
    label,
    live_versions,
    new_version,
    open_view,
)

log = structlog.get_logger("workers.rebuild")


SPLIT_FROM = 20_000
"""The log size from which a rebuild replays a ``replays_apart`` view in two processes."""


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
    split_from: int | None = SPLIT_FROM
    """Replay half the partitions in a second process (:mod:`workers.replay_split`) when
    the log holds at least this many entries and the view's partitions are independent
    (``replays_apart``: the audit); ``None``: never. Below it, starting the process costs
    more than it saves."""


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


class LockLost(ReplayAborted):
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


# -- the rebuild -----------------------------------------------------------------------------


class KeepAlive:
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

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[str]:
        """Pause the live projector of the view (kept alive with the lock) for the block;
        yields the pause token, which the switch checks is still ours."""
        token = secrets.token_hex(8)
        key = self.pointers.key(self.name, ":pause")
        await self.pointers.redis.set(key, token, px=self.opts.pause_ttl_ms)
        self.pause_token = token
        try:
            yield token
        finally:
            self.pause_token = None
            await self.pointers.unpause(self.name, token)


@asynccontextmanager
async def locked(
    pointers: ViewPointers, name: str, opts: RebuildOptions
) -> AsyncIterator[KeepAlive]:
    """The rebuild lock of view ``name`` (rebuild and verify both take it), refreshed until
    the block exits, then released."""
    holder = await pointers.lock(name, opts.lock_ttl_ms, opts.lock_wait_s)
    keeper = KeepAlive(pointers, name, holder, opts)
    try:
        yield keeper
    finally:
        await keeper.stop()
        await pointers.unlock(name, holder)


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


class ViewCurrent(Exception):
    """``rebuild_view(only_outdated=True)`` found, under the lock, the live view built by
    this code's version (another process upgraded it meanwhile): nothing to do."""


async def outdated(
    settings: Any, name: str, redis: RedisClient | None = None
) -> tuple[str, int, int] | None:
    """``(live version, built by, this code's version)`` when the live version of view
    ``name`` was built by an older version of its projection; else ``None``."""
    own = redis is None
    client = settings.redis.connect() if redis is None else redis
    try:
        live = await ViewPointers(client, settings.redis.prefix).current(name)
        built, code = await live_versions(factory_for(name), settings, live, redis=client)
    finally:
        if own:
            await client.aclose()
    return (live, built, code) if built is not None and built < code else None


async def upgrade_view(
    settings: Any,
    name: str,
    options: RebuildOptions | None = None,
    progress: Progress | None = None,
) -> RebuildReport | None:
    """Projection versions instead of migrations: if the live version of view ``name`` was
    built by an older version of its projection, rebuild it with this code into a new
    version and switch to it, exactly as ``streamshop rebuild`` does (the old version keeps
    serving meanwhile). ``None`` when the live view is current.

    Several projectors starting at once: one takes the rebuild lock, the others wait for it
    and then find the view current.
    """
    while (found := await outdated(settings, name)) is not None:
        live, built, code = found
        log.warning(
            "view_outdated_rebuilding", view=name, live=label(live), built_by=built, version=code
        )
        try:
            return await rebuild_view(settings, name, options, progress, only_outdated=True)
        except ViewCurrent:
            return None
        except RebuildBusy:
            log.info("view_upgrade_waits_for_rebuild", view=name)
    return None


async def upgrade_views(settings: Any, names: Sequence[str]) -> list[RebuildReport]:
    """:func:`upgrade_view` for each versioned view among ``names`` (the projector's start)."""
    reports = []
    for name in names:
        if name in VIEWS and (report := await upgrade_view(settings, name)) is not None:
            reports.append(report)
    return reports


async def rebuild_view(
    settings: Any,
    name: str,
    options: RebuildOptions | None = None,
    progress: Progress | None = None,
    *,
    only_outdated: bool = False,
) -> RebuildReport:
    """Rebuild view ``name`` into a new version and switch readers and projector to it.

    Raises :class:`RebuildAborted` (nothing switched) when an entry fails without
    ``park_failures``, when the lock is lost, or when anything else stops it before the switch.
    ``only_outdated`` (:func:`upgrade_view`): raises :class:`ViewCurrent` instead of
    rebuilding when, once the lock is held, the live view turns out current.
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
        async with locked(pointers, name, opts) as keeper:
            if only_outdated and await outdated(settings, name, redis) is None:
                raise ViewCurrent(name)
            dropped = await drop_leftovers(settings, pointers, name)
            live = await pointers.current(name)
            version = new_version()
            await pointers.register(name, version)
            log.info("rebuild_started", view=name, version=version, on_failure=stats.on_failure)
            positions = {p: "0-0" for p in range(store.keys.partitions)}
            try:
                async with open_view(factory_for(name), settings, version) as view:
                    projection = rebuild_target(view)
                    await projection.setup()
                    total = await store.count()
                    progress.start(total)
                    await replay_split(
                        settings,
                        name,
                        version,
                        store,
                        projection,
                        positions,
                        opts.batch,
                        stats,
                        progress,
                        retries=retries,
                        fence=keeper,
                        two_processes=_splits(projection, opts, total, len(positions)),
                    )
                    await catch_up(
                        store,
                        projection,
                        positions,
                        opts.batch,
                        stats,
                        within=catchup,
                        rounds=opts.max_rounds,
                        progress=progress,
                        retries=retries,
                        fence=keeper,
                    )
                    await flush(projection, progress, retries, keeper)
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


def _splits(projection: Projection, opts: RebuildOptions, total: int, partitions: int) -> bool:
    """Whether the replay goes into two processes (see :attr:`RebuildOptions.split_from`)."""
    return (
        opts.split_from is not None
        and total >= opts.split_from
        and partitions > 1
        and bool(getattr(projection, "replays_apart", False))
    )


def rebuild_target(projection: Projection) -> Projection:
    """What a rebuild replays into: the read models fold the replay in memory and insert
    the final documents at :func:`flush` (:mod:`projections.read_models.bulk`: a fresh
    version has no other writer); the warehouse writes the batches of all partitions handed
    in together as one transaction (:mod:`projections.warehouse_bulk`); the audit is
    replayed into as it is."""
    if isinstance(projection, ReadModelsProjection):
        return BulkFold(projection)  # type: ignore[return-value]
    if isinstance(projection, WarehouseProjection):
        return GroupCommit(projection)  # type: ignore[return-value]
    return projection


async def flush(projection: Any, progress: Progress, retries: int, fence: KeepAlive) -> None:
    """Write what a rebuild target holds in memory (before the pause, so the switch only
    waits for the last entries), waiting out a sink that is down as the replay does."""
    write = getattr(projection, "flush", None)
    if write is None:
        return
    progress.set_phase("writing")
    attempt = 0
    while True:
        fence.check()
        try:
            await write()
            return
        except Exception as exc:
            if not is_sink_error(exc) or attempt >= retries:
                raise
            attempt += 1
            log.warning("rebuild_sink_unavailable", error=str(exc), attempt=attempt)
            await asyncio.sleep(min(0.2 * 2 ** min(attempt, 6), 5.0))


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
    if isinstance(exc, ReplayAborted):
        reason = str(exc)
    else:
        log.error("rebuild_error", view=name, version=version, exc_info=exc)
        reason = error_text(exc)
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
        log.warning("rebuild_shadow_left", view=name, version=version, error=error_text(drop_error))
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
    keeper: KeepAlive,
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
        switching = False
        async with keeper.paused() as token:
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
                    fence=keeper,
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
    "upgrade_view",
    "upgrade_views",
]
