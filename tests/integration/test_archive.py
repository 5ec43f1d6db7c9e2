"""``streamshop archive``: the log's old part moves to Parquet segments and every reader still
reads one whole log, in order; a group that needs the tail stops it; a crash at any point
loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import RedisSettings, Settings
from events.archive import read_manifest, segment_table
from events.errors import ArchiveError
from events.files import FileRoot
from events.positions import parse_stream_id
from events.store import Append, EventStore
from events.types import StockAdjusted
from tests.conftest import REDIS_URL
from tests.integration.test_export import ROOT, cli_env
from workers.archive import ArchiveOptions, ArchiveReport, GroupNeedsLog, _Run, archive

Log = list[tuple[int, str, dict[bytes, bytes]]]


def store_settings(store: EventStore) -> Settings:
    keys = store.keys
    return Settings(
        redis=RedisSettings(url=REDIS_URL, prefix=keys.prefix, partitions=keys.partitions)
    )


async def fill(store: EventStore, events: int) -> None:
    for i in range(events):  # 64 products: every partition holds some (crc32 of the names)
        event = StockAdjusted(product_id=f"{i % 64:04d}", delta=1, reason="in")
        await store.append(Append(events=[event]))


async def whole_log(store: EventStore, batch: int = 7) -> Log:
    """Every entry through the store's reader, in small batches that cross segment edges."""
    out: Log = []
    for p in range(store.keys.partitions):
        after = "0-0"
        while rows := await store.read_raw(p, after, batch):
            out += [(p, entry_id, fields) for entry_id, fields in rows]
            after = rows[-1][0]
    return out


async def redis_log(store: EventStore) -> Log:
    out: Log = []
    for p in range(store.keys.partitions):
        out += [(p, e.decode(), f) for e, f in await store.redis.xrange(store.keys.log(p))]
    return out


async def log_memory(store: EventStore) -> int:
    total = 0
    for key in store.keys.logs():
        total += int(await store.redis.memory_usage(key, samples=0) or 0)
    return total


async def test_archived_log_reads_as_one_log_and_leaves_the_tail_in_redis(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 400)
    before, memory_before = await redis_log(store), await log_memory(store)
    heads = await store.heads()

    report = await archive(
        store_settings(store), ArchiveOptions(to=str(tmp_path), keep=10, segment_rows=20)
    )

    assert report.entries == len(before) - 10 * store.keys.partitions
    assert report.trimmed == report.entries
    for p in range(store.keys.partitions):
        assert await store.redis.xlen(store.keys.log(p)) == 10
    assert await whole_log(store) == before
    assert [(e.entry_id, e.type) for e in [x async for x in store.read_all(batch=9)]] == sorted(
        ((eid, f[b"type"].decode()) for _, eid, f in before), key=lambda r: _sid(r[0])
    )
    assert await store.count() == len(before)
    assert await store.heads() == heads
    memory_after = await log_memory(store)
    assert memory_after < memory_before / 2, (memory_before, memory_after)

    again = await archive(
        store_settings(store), ArchiveOptions(to=str(tmp_path), keep=10, segment_rows=20)
    )
    assert (again.entries, again.trimmed) == (0, 0)
    assert await whole_log(store) == before


def _sid(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def test_a_group_that_still_needs_the_tail_stops_the_archive_and_is_named(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 64)
    before = await redis_log(store)
    stream = store.keys.log(0)
    await store.redis.xgroup_create(stream, "late_view", id="0")

    with pytest.raises(GroupNeedsLog, match="'late_view' has delivered only up to 0-0"):
        await archive(store_settings(store), ArchiveOptions(to=str(tmp_path), keep=2))

    await store.redis.xreadgroup("late_view", "c1", {stream: ">"})  # delivered, not acked
    with pytest.raises(GroupNeedsLog, match="'late_view' still holds pending"):
        await archive(store_settings(store), ArchiveOptions(to=str(tmp_path), keep=2))
    assert await redis_log(store) == before
    assert not read_manifest(FileRoot(str(tmp_path)))["partitions"].get("0", {}).get("segments")


async def test_a_committed_segment_whose_trim_did_not_run_is_trimmed_not_archived_again(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 120)
    before = await redis_log(store)
    settings = store_settings(store)
    await archive(settings, ArchiveOptions(to=str(tmp_path), keep=12))
    # A later run that died right after committing a segment, before its trim: Redis and
    # the archive then both hold those entries.
    root = FileRoot(str(tmp_path))
    dead = ArchiveReport(archive=str(tmp_path))
    run = _Run(store.redis, store.keys, root, dead, ArchiveOptions(to=str(tmp_path)), "t")
    rows = await store.read_raw(0, run.last(0) or "0-0", 5)
    run.commit_segment(0, rows)
    assert await whole_log(store) == before  # readers see them once meanwhile
    assert await store.count() == len(before)

    report = await archive(settings, ArchiveOptions(to=str(tmp_path), keep=3, segment_rows=4))

    segments = read_manifest(root)["partitions"]["0"]["segments"]
    assert [s["first"] for s in segments].count(rows[0][0]) == 1
    assert report.entries == 9 * store.keys.partitions - 5  # from 12 kept down to 3
    assert report.trimmed == 9 * store.keys.partitions
    assert await whole_log(store) == before


async def test_a_segment_written_but_not_committed_is_removed_and_written_again(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 80)
    before = await redis_log(store)
    root = FileRoot(str(tmp_path))
    rows = await store.read_raw(1, "0-0", 6)
    orphan = f"p1/seg-{rows[0][0]}-{rows[-1][0]}.parquet"
    root.write_table(orphan, segment_table(rows[:3]), "dead")  # wrong content on purpose
    (tmp_path / "p1" / "seg-x.parquet.tmp-dead").write_bytes(b"half a file")

    report = await archive(
        store_settings(store), ArchiveOptions(to=str(tmp_path), keep=4, segment_rows=6)
    )

    assert report.removed == 2
    assert not [f for f in root.files("") if ".tmp-" in f]
    assert await whole_log(store) == before


async def test_an_archive_of_another_place_is_refused(store: EventStore, tmp_path: Path) -> None:
    await fill(store, 40)
    await archive(store_settings(store), ArchiveOptions(to=str(tmp_path / "a"), keep=2))
    with pytest.raises(ArchiveError, match="archived at"):
        await archive(store_settings(store), ArchiveOptions(to=str(tmp_path / "b"), keep=1))


async def test_a_run_killed_anywhere_then_run_again_loses_and_duplicates_nothing(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 1500)
    before = await redis_log(store)
    settings = store_settings(store)
    env = {**cli_env(settings), "ARCHIVE_URL": str(tmp_path)}
    command = [sys.executable, "-m", "workers.cli", "archive", "--keep", "10"]
    for delay in (0.9, 1.3, 1.7):  # the CLI's start takes about a second
        proc = subprocess.Popen(  # noqa: ASYNC220 (started, then killed, never waited on long)
            [*command, "--segment-rows", "3", "--lock-ttl", "0.5"], cwd=ROOT, env=env
        )
        await asyncio.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        await asyncio.sleep(0.6)  # the killed run's lock lapses
        assert await whole_log(store, batch=50) == before
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert await whole_log(store, batch=50) == before
    for p in range(store.keys.partitions):
        assert await store.redis.xlen(store.keys.log(p)) == 10
    archived = read_manifest(FileRoot(str(tmp_path)))["partitions"]
    assert (
        sum(s["rows"] for part in archived.values() for s in part["segments"])
        == len(before) - 10 * store.keys.partitions
    )


def next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq) + 1}"


async def test_a_range_that_ends_inside_the_archive_is_read_up_to_its_bound(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 80)
    before = await store.redis.xrange(store.keys.log(0))
    await archive(store_settings(store), ArchiveOptions(to=str(tmp_path), keep=2, segment_rows=3))
    # a bound no entry has, between entries i and i + 1: entry i's id with its sequence + 1,
    # where entry i + 1 is not that very id (two entries of one millisecond may be)
    ids = [e.decode() for e, _ in before]
    i = next(
        i
        for i in range(4, len(ids) - 1)
        if parse_stream_id(next_id(ids[i])) < parse_stream_id(ids[i + 1])
    )
    between = next_id(ids[i])

    rows = await store.read_raw(0, ids[1], 100, through=between)

    assert [r[0] for r in rows] == ids[2 : i + 1]
