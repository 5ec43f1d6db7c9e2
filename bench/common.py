"""Shared benchmark plumbing: a throwaway Redis configured like production, timing, machine facts.

Starting servers is :mod:`scripts.servers`, shared with ``make run`` and the tests.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata

from scripts.servers import DURABLE_REDIS_ARGS, redis_server


@contextlib.contextmanager
def durable_redis() -> Iterator[str]:
    """A private redis-server with the settings ``make run`` uses (AOF, fsync on every write).

    Benchmarking against it, rather than the machine's cache-only Redis, means the figures
    include the fsync that makes an acknowledged command survive ``kill -9``.
    """
    with (
        tempfile.TemporaryDirectory(prefix="ssbench-redis-") as tmp,
        redis_server(
            tmp,
            *DURABLE_REDIS_ARGS,
            *("--stream-node-max-bytes", "65536", "--stream-node-max-entries", "1000"),
        ) as url,
    ):
        yield url


@dataclass
class Timer:
    started: float = 0.0
    seconds: float = 0.0

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def machine() -> dict[str, object]:
    versions = {}
    for pkg in ("redis", "msgspec", "litestar", "pymongo", "beanie", "asyncpg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    redis_version = ""
    if exe := shutil.which("redis-server"):
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        redis_version = out.split("v=")[1].split()[0] if "v=" in out else out.strip()
    return {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "redis_server": redis_version,
        "packages": versions,
    }
