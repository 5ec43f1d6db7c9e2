"""Long ``streamshop`` commands report progress: off a terminal as one JSON line now and then
(``rebuild_progress`` with done/total, events/s and ETA) and a last one at 100 %."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from events.store import EventStore
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]


def cli(store: EventStore, *args: str) -> tuple[int, str, list[dict[str, Any]]]:
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "STREAM_PREFIX": store.keys.prefix,
        "STREAM_PARTITIONS": str(store.keys.partitions),
        "LOG_FORMAT": "json",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
        "ARGON2_PARALLELISM": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    lines = []
    for raw in done.stderr.decode().splitlines():
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "rebuild_progress":
            lines.append(record)
    return done.returncode, done.stdout.decode(), lines


async def test_demo_reports_its_commands_done_out_of_all(store: EventStore) -> None:
    code, out, progress = cli(store, "demo", "--accounts", "2", "--products", "3", "--orders", "4")
    assert code == 0, out
    assert progress, "no progress lines"
    assert {line["view"] for line in progress} == {"demo"}
    last = progress[-1]
    assert last["total"] == 9 and last["done"] == 9, last
    assert "orders" in {line["phase"] for line in progress}


async def test_dlq_retry_reports_progress_and_keeps_stdout_for_its_report(
    store: EventStore,
) -> None:
    code, out, progress = cli(store, "dlq", "retry")
    assert code == 0
    assert progress and progress[-1]["view"] == "dlq retry", progress
    assert "rebuild_progress" not in out
    code, _, quiet = cli(store, "dlq", "retry", "--no-progress")
    assert code == 0 and not quiet
