"""A rebuild killed half-way (SIGKILL on the real CLI process) leaves the live view as it
was, and the next rebuild cleans up after it and completes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from app.settings import Settings
from events.store import EventStore
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from tests.support.cluster import single_and_cluster
from workers.verify import verify_view
from workers.views import ViewPointers, pg_schema

pytestmark = single_and_cluster

ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": settings.redis.url,
        "REDIS_CLUSTER": "1" if settings.redis.cluster else "0",
        "STREAM_PREFIX": settings.redis.prefix,
        "STREAM_PARTITIONS": str(settings.redis.partitions),
        "MONGO_URL": settings.mongo.url,
        "MONGO_DB": settings.mongo.database,
        "DATABASE_URL": settings.postgres.url,
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }


async def audit_rows(dsn: str, schema: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT partition, n, entry_id, hash, recorded_at FROM "{schema}".events'
            " ORDER BY partition, n"
        )
        return [tuple(r) for r in rows]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


async def schema_exists(dsn: str, schema: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema))
    finally:
        await conn.close()


async def test_a_killed_rebuild_leaves_the_live_view_untouched_and_can_run_again(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=10, products=10)
    await shop.run(400)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    dsn = settings.postgres.url
    async with live_projector(settings, ["audit"]) as runner:
        await eventually(lambda: caught_up(store, runner), within=60, what="the live views")
        live = await pointers.current("audit")
        before = await audit_rows(dsn, pg_schema("audit", live))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "workers.cli", "rebuild", "audit", "--batch", "2"),
            cwd=ROOT,
            env=cli_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            half_built: list[str] = []

            async def building() -> bool:
                half_built[:] = sorted(await pointers.registered("audit"))
                if not half_built:
                    return False
                done = len(await audit_rows(dsn, pg_schema("audit", half_built[0])))
                return done > 20

            await eventually(building, within=30, what="the rebuild to be under way")
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        killed = half_built[0]
        assert 20 < len(await audit_rows(dsn, pg_schema("audit", killed))) < len(before)
        assert await pointers.current("audit") == live
        assert await store.redis.get(pointers.key("audit", ":pause")) is None
        await shop.run(10)
        await eventually(lambda: caught_up(store, runner), what="the live view to go on")
        after = await audit_rows(dsn, pg_schema("audit", live))
        assert set(before) <= set(after)  # every row as it was, recorded_at included
        assert len(after) == await store.count()

        again = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "workers.cli", "rebuild", "audit", "--batch", "50"],
            cwd=ROOT,
            env=cli_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr[-2000:]
        assert "audit: now on version" in again.stdout
        assert killed in again.stdout  # reported as dropped
        assert not await schema_exists(dsn, pg_schema("audit", killed))
        rebuilt = await pointers.current("audit")
        assert rebuilt not in (live, killed)
        await eventually(lambda: caught_up(store, runner), what="the rebuilt view to follow")
        assert (await verify_view(settings, "audit")).ok
