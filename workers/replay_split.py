"""A rebuild's replay split over two processes: this one replays some partitions, a child
(``python -m workers.replay_split``) the others, into the same new version.

Why: replaying the audit is this process's CPU (decoding, rows, hashes: ~95 µs an entry),
with PostgreSQL's COPY a third of that on the other core; one process keeps one core
busy. The split is offered to views whose partitions are independent in the store, the
ones that set ``replays_apart = True`` (the audit: a chain, its rows and its checkpoint per
partition). The read models fold in memory across partitions and the warehouse commits
partitions together, so they replay in one process.

How the two talk: the job (settings, view, version, positions, batch, failure handling)
goes to the child as one JSON object on stdin, never in its arguments (the settings hold
secrets). The child writes JSON lines on stdout: ``{"n": k}`` after each applied batch
(the parent's progress), then ``{"result": …}`` (positions, counts, failures) or
``{"failed": …}`` (the first failed entry, when failures abort). Its log lines go to
stderr, as every process's do.

Faults: an apply is idempotent (its checkpoint is in the same transaction), so nothing
here can write an entry twice. The child dies with the parent (``PR_SET_PDEATHSIG``, and it
checks that the parent it was started by is still its parent), so a killed rebuild leaves
no writer behind. A child that dies or fails makes the replay raise
:class:`SplitFailed`, and the rebuild aborts as it does for any error before the switch:
nothing switched, the new version dropped, the next run starts over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog

from events.store import EventStore
from projections.base import Projection
from workers.progress import Progress
from workers.replay import (
    EntryFailed,
    FailedEntry,
    Fence,
    OnFailure,
    ReplayAborted,
    ReplayStats,
    all_or_none,
    replay,
)

log = structlog.get_logger("workers.rebuild")

STDOUT_LIMIT = 1 << 24
"""Bytes one line of the child may hold (a result with many parked entries is long)."""


class SplitFailed(ReplayAborted):
    """The child replaying part of the partitions died or failed."""


class _Failure(msgspec.Struct, frozen=True, kw_only=True):
    partition: int
    entry_id: str
    error: str
    fields: list[tuple[str, str]]
    """The entry's fields, names and values in base64 (they are bytes, and need not be text)."""
    behind: str | None = None

    @classmethod
    def of(cls, f: FailedEntry) -> _Failure:
        fields = [(_b64(k), _b64(v)) for k, v in f.fields.items()]
        return cls(
            partition=f.partition,
            entry_id=f.entry_id,
            error=f.error,
            fields=fields,
            behind=f.behind,
        )

    def entry(self) -> FailedEntry:
        fields = {base64.b64decode(k): base64.b64decode(v) for k, v in self.fields}
        return FailedEntry.of(self.partition, self.entry_id, fields, self.error, self.behind)


class Job(msgspec.Struct, frozen=True, kw_only=True):
    settings: dict[str, Any]
    view: str
    version: str
    positions: dict[int, str]
    batch: int
    on_failure: OnFailure
    retries: int
    parent: int
    """The parent's pid: the child exits at once if it is not its parent any more."""


class Result(msgspec.Struct, frozen=True, kw_only=True):
    positions: dict[int, str]
    events: int
    malformed: int
    failed: int
    parked: int
    read: dict[int, int]
    failures: list[_Failure]
    blocked: dict[str, str]


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of the child: a batch applied (``n``), or its last line."""

    n: int = 0
    result: Result | None = None
    failed: _Failure | None = None
    error: str | None = None


_message = msgspec.json.Decoder(Message)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def split(partitions: Sequence[int]) -> tuple[list[int], list[int]]:
    """This process's partitions and the child's: every other one, so that both halves get
    the same share of a log whose partitions differ in size by their hash."""
    ordered = sorted(partitions)
    return ordered[0::2], ordered[1::2]


async def replay_split(
    settings: Any,
    view: str,
    version: str,
    store: EventStore,
    projection: Projection,
    positions: dict[int, str],
    batch: int,
    stats: ReplayStats,
    progress: Progress | None,
    *,
    retries: int,
    fence: Fence | None,
    two_processes: bool = True,
) -> None:
    """:func:`workers.replay.replay` of every partition from ``positions`` (updated in
    place), half of them in a child process (``two_processes=False``: all here); raises as
    ``replay`` does, or :class:`SplitFailed`. Either side failing stops the other before the
    error goes on."""
    if not two_processes:
        await replay(
            store, projection, positions, batch, stats, progress, retries=retries, fence=fence
        )
        return
    mine, theirs = split(list(positions))
    here = {p: positions[p] for p in mine}
    job = Job(
        settings=msgspec.to_builtins(settings),
        view=view,
        version=version,
        positions={p: positions[p] for p in theirs},
        batch=batch,
        on_failure=stats.on_failure,
        retries=retries,
        parent=os.getpid(),
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.replay_split",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=STDOUT_LIMIT,
    )
    log.info(
        "rebuild_split", view=view, partitions_here=mine, partitions_child=theirs, pid=child.pid
    )
    try:
        _, result = await all_or_none(
            [
                replay(
                    store, projection, here, batch, stats, progress, retries=retries, fence=fence
                ),
                _child(child, job, stats, progress, fence),
            ]
        )
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    positions.update(here)
    positions.update(result.positions)


async def _child(
    child: asyncio.subprocess.Process,
    job: Job,
    stats: ReplayStats,
    progress: Progress | None,
    fence: Fence | None,
) -> Result:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(msgspec.json.encode(job))
    await child.stdin.drain()
    child.stdin.close()
    while True:
        try:
            line = await asyncio.wait_for(child.stdout.readline(), 1.0)
        except TimeoutError:
            if fence is not None:
                fence.check()  # the lock lost while only the child works: stop it
            continue
        if not line:
            code = await child.wait()
            raise SplitFailed(f"the replay's child process {child.pid} ended (exit code {code})")
        message = _message.decode(line)
        if message.result is not None:
            _merge(stats, message.result)
            return message.result
        if message.failed is not None:
            failure = message.failed.entry()
            stats.failures.append(failure)
            stats.failed += 1
            raise EntryFailed(failure)
        if message.error is not None:
            raise SplitFailed(f"the replay's child process failed: {message.error}")
        if progress is not None:
            progress.add(message.n)
        if fence is not None:
            fence.check()


def _merge(stats: ReplayStats, result: Result) -> None:
    stats.events += result.events
    stats.malformed += result.malformed
    for p, n in result.read.items():
        stats.read[p] = stats.read.get(p, 0) + n
    stats.failed += result.failed
    stats.parked += result.parked
    stats.failures.extend(f.entry() for f in result.failures)
    stats.blocked.update(result.blocked)


# -- the child --------------------------------------------------------------------------------


class _Lines(Progress):
    """Reports each applied batch to the parent instead of showing it."""

    def __init__(self) -> None:
        super().__init__("replay", enabled=False)

    def add(self, count: int) -> None:
        _say(Message(n=count))


def _say(message: Message) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(message) + b"\n")
    sys.stdout.buffer.flush()


def _die_with(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies; exit if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


async def _work(job: Job, settings: Any) -> Message:
    from workers.rebuild import rebuild_target
    from workers.registry import factory_for
    from workers.views import open_view

    stats = ReplayStats(on_failure=job.on_failure)
    positions = dict(job.positions)
    redis = settings.redis.connect()
    try:
        store = EventStore(redis, settings.redis.keys)
        async with open_view(factory_for(job.view), settings, job.version, redis=redis) as view:
            projection = rebuild_target(view)
            try:
                await replay(
                    store, projection, positions, job.batch, stats, _Lines(), retries=job.retries
                )
            except EntryFailed as exc:
                return Message(failed=_Failure.of(exc.failure))
    finally:
        await redis.aclose()
    result = Result(
        positions=positions,
        events=stats.events,
        malformed=stats.malformed,
        failed=stats.failed,
        parked=stats.parked,
        read=stats.read,
        failures=[_Failure.of(f) for f in stats.failures],
        blocked=stats.blocked,
    )
    return Message(result=result)


def main() -> int:
    job = msgspec.json.decode(sys.stdin.buffer.read(), type=Job)
    _die_with(job.parent)
    from app.gc_tuning import tune_gc
    from app.logging import configure_logging
    from app.settings import Settings

    settings = msgspec.convert(job.settings, Settings)
    configure_logging(settings.log_format)
    tune_gc()  # as its parent, ``streamshop rebuild``, does
    try:
        _say(asyncio.run(_work(job, settings)))
    except Exception as exc:
        log.exception("rebuild_split_child_failed", view=job.view, version=job.version)
        _say(Message(error=f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
