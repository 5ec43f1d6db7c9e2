"""Move the log's old part from Redis to the archive (``streamshop archive``).

The archive's layout and read side are :mod:`events.archive`. Per partition, a run:

1. finishes what an interrupted run committed but did not trim (see step 4);
2. checks that Redis and the archive together hold the whole partition: the stream's
   ``entries-added`` equals the archived rows plus the entries still in Redis;
3. finds the cut, the last entry older than the hot window (``--keep N`` newest entries
   stay, or ``--older-than`` a duration), and refuses when a consumer group still needs an
   entry up to it: delivered no further, or holding it pending (the refusal names the group);
4. reads the entries after the archived part up to the cut, ``segment_rows`` at a time, and
   for each chunk writes a segment (temporary name, then moved), reads it back and compares
   it entry by entry, commits it to the manifest, and only then trims Redis: one script
   that checks the groups again, removes exactly the entries up to the segment's last id
   (``XTRIM MINID =`` its successor) and sets the partition's archive marker.

A crash at any point loses nothing and duplicates nothing: before the manifest lists a
segment it is not part of the archive (the next run deletes it and writes it again); once
listed, readers take that range from the archive whether or not Redis was trimmed; the trim
is one atomic script, and re-running it for a committed segment is step 1.

This module is the only writer that may remove entries from the canonical log, and only
entries that a committed, verified segment holds (``tests/unit/test_log_guard.py``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
import structlog

from events.archive import MANIFEST, Row, read_manifest, read_segment, segment_table
from events.errors import ArchiveError
from events.files import FileRoot, absolute_url
from events.keys import Keys
from events.positions import parse_stream_id
from events.store import EventStore

log = structlog.get_logger("workers.archive")

DEFAULT_ARCHIVE = "./.data/archive"
REFRESH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
"""KEYS: the archive lock. ARGV: our token, its new TTL (ms). 0: the lock is not ours."""

TRIM = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function le(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as <= bs)
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then delivered = g[i + 1] end
  end
  if not le(ARGV[1], delivered) then return {'behind', name, delivered} end
  local pending = redis.call('XPENDING', KEYS[1], name)
  if pending[1] > 0 and le(pending[2], ARGV[1]) then return {'pending', name, pending[2]} end
end
if ARGV[2] == 'check' then return {'ok', 0} end
local marker = redis.call('GET', KEYS[2])
if marker and le(ARGV[1], marker) then return {'ok', 0} end
local ms, seq = string.match(ARGV[1], '^(%d+)-(%d+)$')
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', '=', ms .. '-' .. (tonumber(seq) + 1))
redis.call('SET', KEYS[2], ARGV[1])
return {'ok', trimmed}
"""
"""KEYS: the partition's stream, its archive marker. ARGV: the last archived entry id,
``check`` or ``trim``. Refuses (``behind``/``pending``, the group, its id) while a group
needs an entry up to that id; else trims exactly the entries up to it and moves the marker
(never backwards). The group check and the trim are one atomic step."""


class GroupNeedsLog(ArchiveError):
    """A consumer group has not yet delivered, or still holds pending, an entry to archive."""

    def __init__(self, partition: int, group: str, reason: str, entry_id: str) -> None:
        what = "has delivered only up to" if reason == "behind" else "still holds pending"
        super().__init__(
            f"partition {partition}: consumer group {group!r} {what} {entry_id}; "
            "the archive keeps the log it still needs"
        )
        self.partition = partition
        self.group = group
        self.reason = reason
        self.entry_id = entry_id


@dataclass(frozen=True, slots=True)
class ArchiveOptions:
    to: str = DEFAULT_ARCHIVE
    """The archive: a directory, or a pyarrow/fsspec URL."""
    keep: int | None = None
    """Keep this many newest entries of each partition in Redis."""
    older_than: timedelta | None = None
    """Archive only entries appended longer ago than this."""
    segment_rows: int = 50_000
    """Entries per segment (and per trim)."""
    lock_ttl_ms: int = 60_000
    """The run's lock lapses this long after its last refresh (each segment): how long a
    killed run keeps the next one out."""


@dataclass(slots=True)
class ArchiveReport:
    archive: str
    entries: int = 0
    segments: int = 0
    trimmed: int = 0
    """Entries removed from Redis (includes trims an interrupted run had left)."""
    removed: int = 0
    """Leftover files of an interrupted run deleted before starting."""
    partitions: dict[int, str] = field(default_factory=dict)
    """The last archived entry id per partition after the run."""
    seconds: float = 0.0

    @property
    def entries_per_s(self) -> float:
        return round(self.entries / self.seconds, 1) if self.seconds > 0 else 0.0


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d`` or ``2w``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 12h, 30d, 2w)")
    return timedelta(seconds=int(number) * units[unit])


class _Run:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        root: FileRoot,
        report: ArchiveReport,
        options: ArchiveOptions,
        token: str,
    ) -> None:
        self.redis, self.keys, self.root, self.report = redis, keys, root, report
        self.options, self.token = options, token
        self.refresh_script = redis.register_script(REFRESH)
        self.store = EventStore(redis, keys)
        self.trim_script = redis.register_script(TRIM)
        self.manifest = read_manifest(root)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"

    def segments(self, p: int) -> list[dict[str, Any]]:
        part = self.manifest["partitions"].setdefault(str(p), {"segments": []})
        segments: list[dict[str, Any]] = part["segments"]
        return segments

    def last(self, p: int) -> str | None:
        segments = self.segments(p)
        return segments[-1]["last"] if segments else None

    async def hold_lock(self) -> None:
        ttl = self.options.lock_ttl_ms
        if not await self.refresh_script(keys=[self.keys.archive(":lock")], args=[self.token, ttl]):
            raise ArchiveError("the archive lock was lost (a run stalled longer than its TTL)")

    async def trim(self, p: int, last: str, mode: str = "trim") -> int:
        await self.hold_lock()
        reply = await self.trim_script(
            keys=[self.keys.log(p), self.keys.archived(p)], args=[last, mode]
        )
        status = reply[0].decode()
        if status != "ok":
            raise GroupNeedsLog(p, reply[1].decode(), status, reply[2].decode())
        return int(reply[1])

    async def check_whole(self, p: int) -> None:
        """Redis and the archive together hold every entry ever added to partition ``p``."""
        try:
            info = await self.redis.xinfo_stream(self.keys.log(p))
        except aioredis.ResponseError:  # no such stream: nothing was ever appended
            if self.segments(p):
                raise ArchiveError(
                    f"partition {p}: the archive holds entries, Redis none"
                ) from None
            return
        archived = sum(s["rows"] for s in self.segments(p))
        if info["entries-added"] != archived + info["length"]:
            raise ArchiveError(
                f"partition {p}: {info['entries-added']} entries were appended, Redis holds "
                f"{info['length']} and the archive at {self.root.url} {archived}; "
                "is this the archive of this log?"
            )

    async def cut(self, p: int, options: ArchiveOptions) -> str | None:
        """The last entry id of ``p`` to archive (``None``: nothing is old enough)."""
        stream = self.keys.log(p)
        cuts: list[str] = []
        if options.keep is not None:
            rows = await self.redis.xrevrange(stream, count=options.keep + 1)
            if len(rows) <= options.keep:
                return None
            cuts.append(rows[options.keep][0].decode())
        if options.older_than is not None:
            before = int((time.time() - options.older_than.total_seconds()) * 1000)
            rows = await self.redis.xrevrange(stream, max=f"({before}-0", count=1)
            if not rows:
                return None
            cuts.append(rows[0][0].decode())
        last = self.last(p)
        cut = min(cuts, key=parse_stream_id)
        return None if last is not None and parse_stream_id(cut) <= parse_stream_id(last) else cut

    def commit_segment(self, p: int, rows: list[Row]) -> dict[str, Any]:
        """Write ``rows`` as a segment, read it back and compare it entry by entry, then list
        it in the manifest (the commit). Raises before the commit if anything differs."""
        first, last = rows[0][0], rows[-1][0]
        rel = f"p{p}/seg-{first}-{last}.parquet"
        entry = self.root.write_table(rel, segment_table(rows), self.run_id)
        entry.update(first=first, last=last)
        if read_segment(self.root, entry) != rows:
            self.root.delete(rel)
            raise ArchiveError(f"{self.root.url}/{rel}: read back, it differs from Redis")
        self.segments(p).append(entry)
        self.manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.root.write_json(MANIFEST, self.manifest, self.run_id)
        return entry

    def remove_leftovers(self) -> int:
        """Delete segment files the manifest does not list and temporary files."""
        listed = {
            s["path"] for part in self.manifest["partitions"].values() for s in part["segments"]
        }
        removed = 0
        for rel in self.root.files(""):
            if rel == MANIFEST or rel in listed:
                continue
            self.root.delete(rel)
            removed += 1
        return removed

    async def partition(self, p: int) -> None:
        options = self.options
        last = self.last(p)
        if last is not None:
            self.report.trimmed += await self.trim(p, last)  # finish an interrupted run
        await self.check_whole(p)
        cut = await self.cut(p, options)
        if cut is None:
            return
        await self.trim(p, cut, mode="check")
        while True:
            after = self.last(p) or "0-0"
            rows = await self.store.read_raw(p, after, options.segment_rows, through=cut)
            if not rows:
                break
            entry = self.commit_segment(p, rows)
            self.report.segments += 1
            self.report.entries += len(rows)
            self.report.trimmed += await self.trim(p, entry["last"])
            log.info(
                "archive_segment",
                partition=p,
                first=entry["first"],
                last=entry["last"],
                rows=len(rows),
            )
            if entry["last"] == cut:
                break


async def archive(settings: Any, options: ArchiveOptions) -> ArchiveReport:
    """Archive every partition's old part; see the module docstring."""
    if options.keep is None and options.older_than is None:
        raise ValueError("say what stays in Redis: --keep N or --older-than DURATION")
    started = time.monotonic()
    keys: Keys = settings.redis.keys
    url = absolute_url(options.to)
    report = ArchiveReport(archive=url)
    redis = aioredis.Redis.from_url(settings.redis.url)
    token = secrets.token_hex(8)
    lock = keys.archive(":lock")
    try:
        if not await redis.set(lock, token, nx=True, px=options.lock_ttl_ms):
            raise ArchiveError("another archive run holds the lock")
        recorded = await redis.set(keys.archive(), url, nx=True, get=True)
        if recorded is not None and recorded.decode() != url:
            raise ArchiveError(f"this log is archived at {recorded.decode()}, not at {url}")
        run = _Run(redis, keys, FileRoot(url), report, options, token)
        identity = await run.store.identity()
        source = {"prefix": keys.prefix, "partitions": keys.partitions, "identity": identity}
        if run.manifest["source"] and run.manifest["source"] != source:
            raise ArchiveError(f"{url} holds the log {run.manifest['source']}, not {source}")
        run.manifest["source"] = source
        report.removed = run.remove_leftovers()
        for p in range(keys.partitions):
            await run.partition(p)
            if last := run.last(p):
                report.partitions[p] = last
    finally:
        if await redis.get(lock) == token.encode():
            await redis.delete(lock)
        await redis.aclose()
    report.seconds = round(time.monotonic() - started, 3)
    log.info(
        "archive_done",
        archive=url,
        entries=report.entries,
        segments=report.segments,
        trimmed=report.trimmed,
        seconds=report.seconds,
    )
    return report
