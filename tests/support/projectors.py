"""Real ``streamshop`` processes for integration tests, and what tests check against.

A :class:`Cli` runs the real CLI (``python -m workers.cli``) with the environment of one
test (Redis prefix, partitions, PostgreSQL database); projector processes write their JSON
log lines to a file the test can read.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from events.codec import decode_entry
from events.errors import MalformedEvent
from events.store import Append, EventStore
from events.types import StockAdjusted

ROOT = Path(__file__).resolve().parents[2]
SUM_FACTORY = "tests.support.sum_projection:factory"


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 60.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


class Projector:
    """One ``streamshop project`` process."""

    def __init__(self, proc: subprocess.Popen[bytes], consumer: str, log_path: Path) -> None:
        self.proc = proc
        self.consumer = consumer
        self.log_path = log_path

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, within: float = 20.0) -> int:
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.consumer} did not exit within {within}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def started(self, within: float = 60.0) -> None:
        """Wait for the runner to start (a loaded machine can take a while to import)."""

        async def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.consumer} exited early:\n{self.log_path.read_text()}")
            return bool(self.logs("runner_started"))

        await eventually(up, within, f"{self.consumer} to start")

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        """The process's structlog JSON lines (only those with ``event``, if given)."""
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if event is None or record.get("event") == event:
                lines.append(record)
        return lines


class Cli:
    """Runs the real CLI with one test's environment."""

    def __init__(
        self,
        tmp: Path,
        redis_env: dict[str, str],
        prefix: str,
        partitions: int,
        pg_dsn: str,
        table: str,
    ) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            **redis_env,
            "STREAM_PREFIX": prefix,
            "STREAM_PARTITIONS": str(partitions),
            "DATABASE_URL": pg_dsn,
            "SUM_TABLE": table,
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("SUM_FAIL_REASON", None)
        self.env.pop("SUM_DELAY_MS", None)
        self.procs: list[Projector] = []

    def project(self, consumer: str, *args: str, env: dict[str, str] | None = None) -> Projector:
        log_path = self.tmp / f"{consumer}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers.cli",
                    "project",
                    SUM_FACTORY,
                    "--consumer",
                    consumer,
                    *args,
                ],
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        projector = Projector(proc, consumer, log_path)
        self.procs.append(projector)
        return projector

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def close(self) -> None:
        for projector in self.procs:
            if projector.proc.poll() is None:
                projector.proc.kill()
                projector.proc.wait(timeout=10)


async def append_adjustments(
    store: EventStore,
    products: list[str],
    count: int,
    per_append: int = 10,
    reason: str = "count",
) -> None:
    """Append ``count`` StockAdjusted events spread over ``products``, several per append.

    One append holds the events of one partition only (each product's events in their
    order), so every append is one slot on a Redis Cluster too.
    """
    rng = random.Random()
    pending: dict[int, list[StockAdjusted]] = defaultdict(list)
    for i in range(count):
        event = StockAdjusted(
            product_id=products[i % len(products)], delta=rng.randint(-50, 100), reason=reason
        )
        batch = pending[store.keys.partition_of(event.aggregate())]
        batch.append(event)
        if len(batch) == per_append:
            await store.append(Append(events=batch))
            batch.clear()
    for batch in pending.values():
        if batch:
            await store.append(Append(events=batch))


async def fold_log(store: EventStore, skip_reason: str | None = None) -> dict[str, int]:
    """The sums the projection must reach: a fresh fold of the whole log (malformed entries
    and StockAdjusted events with ``skip_reason`` left out)."""
    sums: dict[str, int] = defaultdict(int)
    for p in range(store.keys.partitions):
        after = "0-0"
        while rows := await store.read_raw(p, after, 1000):
            for entry_id, fields in rows:
                try:
                    event = decode_entry(entry_id, fields, p)
                except MalformedEvent:
                    continue
                if isinstance(event.event, StockAdjusted) and event.event.reason != skip_reason:
                    sums[event.aggregate] += event.event.delta
            after = rows[-1][0]
    return dict(sums)


class SumView:
    """Reads the sum projection's tables directly (not through the projector)."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn = dsn
        self.table = table

    async def _fetch(self, sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(sql)
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()

    async def applied(self) -> int:
        rows = await self._fetch(f"SELECT count(*) AS n FROM {self.table}_applied")
        return int(rows[0]["n"]) if rows else 0

    async def sums(self) -> dict[str, int]:
        rows = await self._fetch(f"SELECT aggregate, total FROM {self.table}_sums")
        return {r["aggregate"]: int(r["total"]) for r in rows}

    async def order_violations(self) -> list[str]:
        """Aggregates whose events were applied out of order or with a gap (seq ≠ 1, 2, 3…)."""
        rows = await self._fetch(
            f"SELECT aggregate, array_agg(seq ORDER BY n) AS seqs FROM {self.table}_applied "
            "GROUP BY aggregate"
        )
        return [
            f"{r['aggregate']}: {list(r['seqs'])[:20]}…"
            for r in rows
            if list(r["seqs"]) != list(range(1, len(r["seqs"]) + 1))
        ]


async def group_state(
    redis: aioredis.Redis, prefix: str, partitions: int, group: str
) -> dict[str, int]:
    """Totals over the partitions of one consumer group: entries read, pending, lag."""
    totals = {"entries_read": 0, "pending": 0, "lag": 0}
    for p in range(partitions):
        stream = f"{prefix}:log:{{p{p}}}"
        if not await redis.exists(stream):  # no event hashed to this partition yet
            continue
        for g in await redis.xinfo_groups(stream):
            if g["name"].decode() == group:
                totals["entries_read"] += int(g["entries-read"] or 0)
                totals["pending"] += int(g["pending"])
                totals["lag"] += int(g["lag"] or 0)
    return totals


async def lease_owners(
    redis: aioredis.Redis, prefix: str, partitions: int, projection: str
) -> dict[int, str | None]:
    owners: dict[int, str | None] = {}
    for p in range(partitions):
        raw = await redis.get(f"{prefix}:lease:{projection}:{{p{p}}}")
        owners[p] = raw.decode() if raw is not None else None
    return owners
