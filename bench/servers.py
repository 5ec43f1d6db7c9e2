"""Servers the benchmarks start for themselves: the view stores, the API and the projector.

Everything runs as its own process, configured the way ``make run`` configures it, and is
stopped when its context exits. A :class:`Stack` names one isolated deployment (Redis key
prefix, MongoDB database, PostgreSQL database) and gives the ``Settings`` and the
environment that the in-process code and the child processes share.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from app.settings import AuthSettings, MongoSettings, PostgresSettings, RedisSettings, Settings
from events.connection import connect
from scripts import servers
from scripts.servers import executable, free_port, http_ok, stop

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PARTITIONS = 8
"""Partitions of the bench log (the deployment default)."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def mongo_server() -> Iterator[str]:
    """The embedded MongoDB-protocol server on a temporary on-disk store (as ``make run``)."""
    if url := os.environ.get("BENCH_MONGO_URL"):
        yield url
        return
    with (
        tempfile.TemporaryDirectory(prefix="ssbench-mongo-") as tmp,
        servers.mongo_server(tmp, timeout=60) as url,
    ):
        yield url


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards."""
    name = f"ssbench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def drop_prefix(redis_url: str, prefix: str) -> None:
    """Delete one bench deployment's keys (the bench Redis is private and thrown away anyway)."""
    client = connect(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    finally:
        await client.aclose()


@dataclass(frozen=True)
class Stack:
    """One isolated deployment for a benchmark: its Redis prefix and view databases."""

    redis_url: str
    prefix: str
    mongo_url: str = "mongodb://127.0.0.1:1"
    mongo_db: str = "ssbench"
    pg_dsn: str = PG_ADMIN_DSN
    jwt_secret: str = ""
    partitions: int = PARTITIONS

    @classmethod
    def new(cls, redis_url: str, **kwargs: str) -> Stack:
        tag = uuid.uuid4().hex[:8]
        return cls(
            redis_url=redis_url,
            prefix=f"ssbench:{tag}",
            mongo_db=f"ssbench_{tag}",
            jwt_secret=secrets.token_urlsafe(32),
            **kwargs,  # type: ignore[arg-type]
        )

    def settings(self, auth: AuthSettings | None = None) -> Settings:
        """The settings the child processes build from :meth:`env` (production auth costs)."""
        return Settings(
            redis=RedisSettings(url=self.redis_url, prefix=self.prefix, partitions=self.partitions),
            mongo=MongoSettings(url=self.mongo_url, database=self.mongo_db),
            postgres=PostgresSettings(url=self.pg_dsn),
            auth=auth or AuthSettings(jwt_secret=self.jwt_secret),
            log_format="json",
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "REDIS_URL": self.redis_url,
            "STREAM_PREFIX": self.prefix,
            "STREAM_PARTITIONS": str(self.partitions),
            "MONGO_URL": self.mongo_url,
            "MONGO_DB": self.mongo_db,
            "DATABASE_URL": self.pg_dsn,
            "JWT_SECRET": self.jwt_secret,
            # the same digest key as the in-process stores of settings() (the dev one)
            "EMAIL_DIGEST_SECRET": self.settings().redis.email_digest_secret,
            "LOG_FORMAT": "json",
            "STREAMSHOP_DEV": "0",
            "LOGIN_RATE_PER_MINUTE": "0",  # the login bench is one client by design
            "PYTHONUNBUFFERED": "1",
        }


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    except urllib.error.HTTPError:
        return True  # a 404/405 is an answer
    except (urllib.error.URLError, OSError):
        return False
    return True


@contextlib.contextmanager
def api_server(
    stack: Stack,
    workers: int,
    logs: Path,
    factory: str = "app.main:create_app",
    ready_path: str | None = "/ready",
) -> Iterator[str]:
    """The real API: ``uvicorn --factory app.main:create_app`` with ``workers`` processes.

    uvicorn's own access log is off (the app writes its JSON access line per request, as in
    production); all output goes to ``logs``. Yields the base URL once ``ready_path`` answers
    200 (``/health`` where no view store runs; ``None``: any answer, for the baseline app
    that ``factory`` may name).
    """
    port = free_port()
    command = [
        executable("uvicorn"),
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with logs.open("ab") as out:
        proc = subprocess.Popen(command, env=stack.env(), cwd=ROOT, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a loaded 2-core machine starts workers slowly
        while not (http_ok(base + ready_path) if ready_path else _answers(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start:\n{_tail(logs)}")
            time.sleep(0.2)
        yield base
    finally:
        stop(proc)


@contextlib.contextmanager
def projector(stack: Stack, logs: Path, *names: str) -> Iterator[subprocess.Popen[bytes]]:
    """``streamshop project [names]``: the real projector process, stopped with SIGTERM."""
    with logs.open("ab") as out:
        proc = subprocess.Popen(
            [executable("streamshop"), "project", *names],
            env=stack.env(),
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        yield proc
    finally:
        stop(proc, timeout=30)
