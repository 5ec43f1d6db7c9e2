"""Fixtures for projector tests (import them into a test module)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.store import EventStore
from tests.conftest import RedisTarget
from tests.support.projectors import Cli, SumView


@pytest.fixture
def sum_table() -> str:
    """Table prefix and projection name of this test's sum projection."""
    return f"sums_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cli(
    tmp_path: Path,
    store: EventStore,
    redis_target: RedisTarget,
    prefix: str,
    pg_dsn: str,
    sum_table: str,
) -> Iterator[Cli]:
    """The real CLI on this test's prefix and Redis (one node or the cluster); kills leftover
    processes before keys are cleaned."""
    runner = Cli(tmp_path, redis_target.env(), prefix, store.keys.partitions, pg_dsn, sum_table)
    yield runner
    runner.close()


@pytest.fixture
def view(pg_dsn: str, sum_table: str) -> SumView:
    return SumView(pg_dsn, sum_table)
