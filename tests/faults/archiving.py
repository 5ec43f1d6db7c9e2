"""``streamshop archive`` under the load, as an operator's cron would run it, ``kill -9``'ed
at chosen points of its work, and run again.

Each run is a child process (``streamshop archive --keep N``). Some runs are killed:
``segment`` as soon as a segment file the manifest does not list appears (the segment is
being written, or was written and not yet committed), ``commit`` as soon as the manifest
changes (the commit happened; the trim that follows it may or may not have), ``random``
after a random delay. Where a kill landed is then read from what it left, not assumed: a
segment file no manifest lists, or a partition whose manifest goes past Redis's archive
marker (committed, not trimmed). The next run must finish the job; after the load one
last run must complete (:func:`final_archive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import time
from pathlib import Path

import redis.asyncio as aioredis

from events.archive import MANIFEST, read_manifest
from events.errors import ArchiveError
from events.files import FileRoot
from events.positions import parse_stream_id
from tests.faults.harness import BIN, ROOT, System
from tests.faults.load import ArchiveRuns

KILL_POINTS = ("segment", "commit", "random")
ENTRIES = re.compile(r"archive to \S+: ([\d,]+) entries in (\d+) segments, ([\d,]+) trimmed")


def _argv(archive_dir: Path, keep: int, segment_rows: int, lock_ttl_s: float) -> list[str]:
    return [
        str(BIN / "streamshop"),
        "archive",
        "--to",
        str(archive_dir),
        "--keep",
        str(keep),
        "--segment-rows",
        str(segment_rows),
        "--lock-ttl",
        str(lock_ttl_s),
    ]


def _listed(archive_dir: Path) -> set[str]:
    try:
        manifest = read_manifest(FileRoot(str(archive_dir)))
    except (ArchiveError, OSError):  # read it again next time
        return set()
    return {s["path"] for part in manifest["partitions"].values() for s in part["segments"]}


def _unlisted(archive_dir: Path, listed: set[str]) -> list[str]:
    """Files under ``archive_dir`` that are neither the manifest nor a listed segment."""
    out = []
    for path in archive_dir.rglob("*"):
        rel = path.relative_to(archive_dir).as_posix()
        if path.is_file() and not rel.startswith(MANIFEST) and rel not in listed:
            out.append(rel)
    return out


def _manifest_stamp(archive_dir: Path) -> tuple[int, int] | None:
    try:
        st = (archive_dir / MANIFEST).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


async def _landed(system: System, archive_dir: Path) -> str:
    """What a killed run left: ``mid-segment``, ``committed, not trimmed``, or ``between``."""
    listed = _listed(archive_dir)
    parts = []
    if leftovers := _unlisted(archive_dir, listed):
        parts.append(f"mid-segment ({len(leftovers)} unlisted file(s))")
    try:
        manifest = read_manifest(FileRoot(str(archive_dir)))
    except (ArchiveError, OSError) as exc:  # reported; the checks read the archive again
        return f"manifest unreadable: {exc}"
    client = system.redis(socket_timeout=5)
    keys = system.settings.redis.keys
    try:
        for p, part in sorted(manifest["partitions"].items()):
            segments = part.get("segments") or []
            if not segments:
                continue
            with contextlib.suppress(OSError, aioredis.RedisError):
                marker = await client.get(keys.archived(int(p)))
                last = segments[-1]["last"]
                if marker is None or parse_stream_id(marker.decode()) < parse_stream_id(last):
                    parts.append(f"committed, not trimmed (p{p} {last})")
    finally:
        await client.aclose()
    return "; ".join(parts) or "between segments"


async def run_once(
    system: System,
    runs: ArchiveRuns,
    archive_dir: Path,
    keep: int,
    segment_rows: int,
    lock_ttl_s: float,
    kill_at: str | None,
    rng: random.Random,
    limit_s: float = 60.0,
) -> int:
    """One run, killed at ``kill_at`` if given and reached; its exit code (-9: killed)."""
    log = (system.base / "logs" / "archive.log").open("ab")
    log.write(f"\n=== run {runs.runs + 1} kill_at={kill_at} at {system.elapsed()}s ===\n".encode())
    log.flush()
    out_at = log.tell()
    proc = await asyncio.create_subprocess_exec(
        *_argv(archive_dir, keep, segment_rows, lock_ttl_s),
        cwd=ROOT,
        env=system.env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    runs.runs += 1
    killed = False
    if kill_at is not None:
        listed, stamp = _listed(archive_dir), _manifest_stamp(archive_dir)
        stale = set(_unlisted(archive_dir, listed))  # an earlier kill's, until a run cleans up
        delay = rng.uniform(1.5, 4.0)
        started = time.monotonic()
        while proc.returncode is None and time.monotonic() - started < limit_s:
            hit = (
                (kill_at == "segment" and set(_unlisted(archive_dir, listed)) - stale)
                or (kill_at == "commit" and _manifest_stamp(archive_dir) != stamp)
                or (kill_at == "random" and time.monotonic() - started > delay)
            )
            if hit:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.001)
    try:
        code = await asyncio.wait_for(proc.wait(), limit_s)
    except TimeoutError:
        proc.kill()
        code = await proc.wait()
        runs.errors.append(f"run {runs.runs}: did not end within {limit_s:.0f}s")
    output = (system.base / "logs" / "archive.log").read_bytes()[out_at:].decode(errors="replace")
    if killed:
        runs.kills.append(f"{kill_at} at {system.elapsed()}s: {await _landed(system, archive_dir)}")
        return -9
    if kill_at is not None:
        runs.missed_kills.append(f"{kill_at}: the run ended ({code}) before the point")
    if code == 0:
        runs.completed += 1
        if match := ENTRIES.search(output):
            runs.entries += int(match.group(1).replace(",", ""))
            runs.segments += int(match.group(2))
    elif code == 3:
        why = output.strip().splitlines()[-1] if output.strip() else ""
        reason = (
            "lock held"
            if "holds the lock" in why
            else "a consumer group needs the log"
            if "consumer group" in why
            else why[:160]
        )
        runs.refused[reason] = runs.refused.get(reason, 0) + 1
    else:
        last = output.strip().splitlines()[-1][:200] if output.strip() else ""
        runs.errors.append(f"run {runs.runs} at {system.elapsed()}s exit {code}: {last}")
    return code


async def archive_loop(
    system: System,
    runs: ArchiveRuns,
    stop: asyncio.Event,
    archive_dir: Path,
    *,
    keep: int,
    segment_rows: int,
    every_s: float,
    lock_ttl_s: float,
    seed: int,
    max_runs: int = 10,
) -> None:
    """Archive until ``stop``: a run is killed at the next point of :data:`KILL_POINTS`
    still to hit (a run that ends before its point leaves it for the next one, e.g. while
    the log is still shorter than ``keep``), and the run after each kill is left to finish
    its work. At most ``max_runs`` (each is a Python start with pyarrow: CPU the load
    needs), and none once every point was hit and a run completed after the last kill."""
    rng = random.Random(seed)
    points = list(KILL_POINTS)
    n, killed = 0, False
    while not stop.is_set() and n < max_runs and (points or killed):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        kill_at = points[0] if points and not killed else None
        code = await run_once(
            system, runs, archive_dir, keep, segment_rows, lock_ttl_s, kill_at, rng
        )
        killed = kill_at is not None and code == -9
        if killed:
            points.pop(0)
        n += 1


async def final_archive(
    system: System,
    runs: ArchiveRuns,
    archive_dir: Path,
    *,
    keep: int,
    segment_rows: int,
    lock_ttl_s: float,
    deadline_s: float,
) -> None:
    """After the load: run until one run completes (a refusal, e.g. the lock a killed run
    left, is waited out), bounded; ``runs.final`` is the last exit code."""
    rng = random.Random(0)
    deadline = time.monotonic() + deadline_s
    while True:
        code = await run_once(system, runs, archive_dir, keep, segment_rows, lock_ttl_s, None, rng)
        runs.final = code
        if code == 0 or time.monotonic() > deadline:
            return
        await asyncio.sleep(lock_ttl_s / 2)
