"""An audit rebuild with its replay split over two processes (:mod:`workers.replay_split`):
the same chains as the live view, and under ``SIGKILL`` of either process nothing is
switched, no writer is left behind, and the next rebuild completes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import structlog

from app.settings import Settings
from events.store import EventStore
from tests.integration.test_rebuild_interrupted import ROOT, cli_env, schema_exists
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from tests.support.cluster import single_and_cluster
from workers.rebuild import RebuildAborted, RebuildOptions, rebuild_view
from workers.replay_split import split
from workers.verify import verify_view
from workers.views import ViewPointers, pg_schema

pytestmark = single_and_cluster


async def chains(dsn: str, schema: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT partition, n, entry_id, prev_hash, hash FROM "{schema}".events'
            " ORDER BY partition, n"
        )
        return [tuple(r) for r in rows]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_a_split_audit_rebuild_has_the_live_chains(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=5, products=5)
    await shop.run(150)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    async with live_projector(settings, ["audit"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live audit")
        live = await pointers.current("audit")
        with structlog.testing.capture_logs() as logs:
            report = await rebuild_view(settings, "audit", RebuildOptions(batch=20, split_from=0))
        await eventually(lambda: caught_up(store, runner), what="the rebuilt audit to follow")
        assert (await verify_view(settings, "audit")).ok
    theirs = split(range(store.keys.partitions))[1]
    splits = [e for e in logs if e["event"] == "rebuild_split"]
    assert len(splits) == 1 and splits[0]["partitions_child"] == theirs
    assert report.events == await store.count()
    before = await chains(settings.postgres.url, pg_schema("audit", live))
    after = await chains(settings.postgres.url, pg_schema("audit", report.version))
    assert len(before) == await store.count() > 0
    assert {r[0] for r in after} >= set(theirs)  # the child's partitions are there
    assert after == before


async def test_a_rebuild_whose_child_is_killed_aborts_and_the_next_one_completes(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=10, products=10)
    await shop.run(400)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    dsn = settings.postgres.url
    async with live_projector(settings, ["audit"]) as runner:
        await eventually(lambda: caught_up(store, runner), within=60, what="the live audit")
        live = await pointers.current("audit")
        with structlog.testing.capture_logs() as logs:
            rebuild = asyncio.ensure_future(
                rebuild_view(settings, "audit", RebuildOptions(batch=2, split_from=0))
            )
            try:

                async def child_writing() -> bool:
                    started = [e for e in logs if e["event"] == "rebuild_split"]
                    building = await pointers.registered("audit")
                    if not started or not building:
                        return False
                    rows = await chains(dsn, pg_schema("audit", sorted(building)[0]))
                    theirs = split(range(store.keys.partitions))[1]
                    return sum(1 for r in rows if r[0] in theirs) > 10

                await eventually(child_writing, within=30, what="the child to be writing")
                version = sorted(await pointers.registered("audit"))[0]
                child = next(e for e in logs if e["event"] == "rebuild_split")["pid"]
                os.kill(child, signal.SIGKILL)
                with pytest.raises(RebuildAborted) as aborted:
                    await asyncio.wait_for(rebuild, 30)
            finally:
                if not rebuild.done():
                    rebuild.cancel()
        assert "child process" in aborted.value.reason
        assert await pointers.current("audit") == live
        assert not await schema_exists(dsn, pg_schema("audit", version))
        report = await rebuild_view(settings, "audit", RebuildOptions(batch=50, split_from=0))
        assert report.events == await store.count()
        await eventually(lambda: caught_up(store, runner), what="the rebuilt audit to follow")
        assert (await verify_view(settings, "audit")).ok


async def test_a_killed_rebuild_takes_its_child_with_it(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=10, products=10)
    await shop.run(400)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    async with live_projector(settings, ["audit"]) as runner:
        await eventually(lambda: caught_up(store, runner), within=60, what="the live audit")
        live = await pointers.current("audit")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "workers.cli", "rebuild", "audit", "--batch", "2", "--split-from", "0"),
            cwd=ROOT,
            env=cli_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            child = 0
            while not child:
                line = await asyncio.wait_for(proc.stderr.readline(), 30)
                assert line, "the rebuild ended before it split"
                if b'"rebuild_split"' in line:
                    child = int(json.loads(line)["pid"])
            drain = asyncio.ensure_future(proc.stderr.read())
            assert alive(child)
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
            drain.cancel()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        async def child_gone() -> bool:
            return not alive(child)

        await eventually(child_gone, within=10, what="the child to die with its parent")
        assert await pointers.current("audit") == live
        again = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "workers.cli", "rebuild", "audit", "--split-from", "0"],
            cwd=ROOT,
            env=cli_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr[-2000:]
        assert "audit: now on version" in again.stdout
        await eventually(lambda: caught_up(store, runner), what="the rebuilt audit to follow")
        assert (await verify_view(settings, "audit")).ok
