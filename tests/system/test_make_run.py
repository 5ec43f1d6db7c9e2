"""``make run`` end to end: scripts/run.py brings the system up, serves /health, stops on Ctrl-C.

Everything lives in a temp directory on free ports (``STREAMSHOP_DATA_DIR``, ``REDIS_PORT``,
``MONGO_PORT``, ``PORT``), with its own PostgreSQL database, so the test never touches
``./.data`` or a developer's running system. The run script starts its own Redis and its
own SecantusDB, exactly as on a fresh machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis

from scripts.servers import free_port
from tests.conftest import PG_ADMIN_DSN, RUN_ID

ROOT = Path(__file__).resolve().parents[2]
UP_SECONDS = 180.0


@dataclass
class System:
    """One data directory and port set; ``start()`` runs scripts/run.py on it like `make run`."""

    data: Path
    env: dict[str, str]
    api_port: int
    redis_port: int
    mongo_port: int
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def log(self) -> Path:
        return self.data.parent / f"run-{self.runs}.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "run.py")],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    def wait_until_up(self) -> None:
        """Poll /health and the banner (printed after ``streamshop check``) with a deadline."""
        assert self.process is not None
        deadline = time.monotonic() + UP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"run.py exited with {self.process.returncode}:\n{self.output()}")
            if health(self.api_port) == 200 and "streamshop is up" in self.output():
                return
            time.sleep(0.25)
        pytest.fail(f"no healthy system after {UP_SECONDS:.0f}s:\n{self.output()}")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the run script, then wait for everything to stop."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run.py did not stop within 60s of SIGINT:\n{self.output()}")

    def leftover_pids(self) -> list[int]:
        pids = []
        for path in (self.data / "run").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(path.read_text())
                os.kill(pid, 0)
                pids.append(pid)
        return pids


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _admin_sql(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(name="system")
def system_fixture(tmp_path: Path) -> Iterator[System]:
    database = f"sstest_{RUN_ID}_system"
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("REDIS_URL", "MONGO_URL", "JWT_SECRET", "EMAIL_DIGEST_SECRET", "STREAMSHOP_DEV")
        and not k.startswith("PYTEST_")
    }
    api_port, redis_port, mongo_port = free_port(), free_port(), free_port()
    env |= {
        "STREAMSHOP_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(api_port),
        "REDIS_PORT": str(redis_port),
        "MONGO_PORT": str(mongo_port),
        "DATABASE_URL": PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}",
        "LOG_FORMAT": "json",
        "ADMIN_EMAIL": "admin@example.com",
        "ADMIN_PASSWORD": "correct horse battery staple",
    }
    system = System(tmp_path / "data", env, api_port, redis_port, mongo_port)
    try:
        yield system
    finally:
        if system.process is not None and system.process.poll() is None:
            system.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                system.process.wait(timeout=30)
        for pid in system.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def assert_stopped_cleanly(system: System, returncode: int) -> None:
    assert returncode == 0, system.output()
    assert "stopped" in system.output()
    for port in (system.api_port, system.redis_port, system.mongo_port):
        assert not listening(port), f"port {port} still open after stop"
    assert system.leftover_pids() == []


def test_run_comes_up_stops_on_ctrl_c_restarts_and_recovers_from_kill_9(system: System) -> None:
    """One scenario, three starts: each start of the whole system costs seconds."""
    system.start()
    system.wait_until_up()
    with redis.Redis(port=system.redis_port) as client:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("system-test:marker", "kept")
    assert (system.data / "jwt_secret").stat().st_mode & 0o777 == 0o600
    assert (system.data / "email_digest_secret").stat().st_mode & 0o777 == 0o600
    if (ROOT / "workers" / "commands" / "create_admin.py").exists():
        assert (system.data / "admin-created").exists(), system.output()
    assert_stopped_cleanly(system, system.interrupt())

    second = system.start()
    system.wait_until_up()
    with redis.Redis(port=system.redis_port) as client:
        assert client.get("system-test:marker") == b"kept", "Redis data did not survive a restart"
    assert "already running" in run_once_more(system)
    second.kill()  # kill -9 of the run script: honcho and the servers are orphaned
    second.wait(timeout=10)
    assert system.leftover_pids(), "the orphans should still be running"

    system.start()
    system.wait_until_up()
    assert "left over from an earlier run" in system.output()
    assert_stopped_cleanly(system, system.interrupt())


def run_once_more(system: System) -> str:
    """A second ``make run`` on a data directory whose run is alive must refuse, not disturb."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run.py")],
        cwd=ROOT,
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert health(system.api_port) == 200
    return result.stderr
