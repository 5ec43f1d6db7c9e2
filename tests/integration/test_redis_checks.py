"""Startup checks against real Redis servers: refuse an evicting Redis, warn on weak persistence."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from events.errors import RedisNotSuitable
from events.store import LIBRARY, check_redis
from scripts.servers import free_port
from tests.system.servers import DURABLE, RedisServer


def _server(directory: Path, **overrides: str) -> Iterator[RedisServer]:
    server = RedisServer(directory, {**DURABLE, **overrides}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _server(tmp_path)


@pytest.fixture
def lru_redis(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _server(tmp_path, **{"maxmemory-policy": "allkeys-lru"})


@pytest.fixture
def aof_off_redis(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _server(tmp_path, appendonly="no")


async def test_the_machines_noeviction_redis_is_accepted(redis_client: aioredis.Redis) -> None:
    await check_redis(redis_client)


async def test_durable_redis_is_accepted_without_warnings(durable_redis: RedisServer) -> None:
    async with aioredis.Redis.from_url(durable_redis.url) as client:
        with capture_logs() as logs:
            assert await check_redis(client) == []
    assert [e for e in logs if e["log_level"] == "warning"] == []


async def test_evicting_redis_is_refused(lru_redis: RedisServer) -> None:
    async with aioredis.Redis.from_url(lru_redis.url) as client:
        with pytest.raises(RedisNotSuitable, match="allkeys-lru"):
            await check_redis(client)


async def test_redis_without_aof_is_accepted_with_a_warning(aof_off_redis: RedisServer) -> None:
    async with aioredis.Redis.from_url(aof_off_redis.url) as client:
        with capture_logs() as logs:
            warnings = await check_redis(client)
    assert len(warnings) == 1 and "AOF" in warnings[0]
    [logged] = [e for e in logs if e["log_level"] == "warning"]
    assert logged["event"] == "redis_persistence_weak"
    assert "AOF" in logged["detail"]


async def test_appendfsync_everysec_is_accepted_with_a_warning(
    durable_redis: RedisServer,
) -> None:
    async with aioredis.Redis.from_url(durable_redis.url) as client:
        await client.config_set("appendfsync", "everysec")
        with capture_logs() as logs:
            [warning] = await check_redis(client)
    assert "everysec" in warning
    assert any(e["event"] == "redis_persistence_weak" for e in logs)


def streamshop_check(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``streamshop check`` as a user runs it, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "check", *args],
        env={**os.environ, "REDIS_URL": url, "LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_command_accepts_a_durable_redis_and_loads_the_functions(
    durable_redis: RedisServer,
) -> None:
    result = streamshop_check(durable_redis.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")
    with closing(redis.Redis.from_url(durable_redis.url)) as client:
        assert client.function_list(library=LIBRARY)


def test_check_command_refuses_an_evicting_redis(lru_redis: RedisServer) -> None:
    result = streamshop_check(lru_redis.url)
    assert result.returncode == 1
    assert "refused" in result.stderr and "noeviction" in result.stderr
    with closing(redis.Redis.from_url(lru_redis.url)) as client:
        assert not client.function_list(library=LIBRARY)


def test_check_command_strict_refuses_weak_persistence(aof_off_redis: RedisServer) -> None:
    assert streamshop_check(aof_off_redis.url).returncode == 0
    strict = streamshop_check(aof_off_redis.url, "--strict")
    assert strict.returncode == 1
    assert "AOF" in strict.stderr


def test_check_command_reports_an_unreachable_redis() -> None:
    result = streamshop_check(f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 2
    assert "unreachable" in result.stderr
