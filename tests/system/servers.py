"""Throwaway ``redis-server`` processes on a temp directory and a free port.

The durability and startup-check tests need a Redis they may configure and ``kill -9``;
the shared one on 6379 is never touched that way.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.exceptions import BusyLoadingError, ConnectionError

from scripts.servers import free_port

DURABLE = {
    "appendonly": "yes",
    "appendfsync": "always",
    "no-appendfsync-on-rewrite": "no",
    "maxmemory-policy": "noeviction",
}
"""The configuration ``make run`` uses (scripts/redis.conf.template)."""


class RedisServer:
    """One ``redis-server`` owned by a test: start, ``kill -9``, restart on the same directory."""

    def __init__(self, directory: Path, config: dict[str, str] | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.directory = directory
        self.config = {"save": "", **(config if config is not None else DURABLE)}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--daemonize", "no"]
        for name, value in self.config.items():
            args += [f"--{name}", value]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until PING answers: the port opens before the AOF has been replayed (LOADING)."""
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except (ConnectionError, BusyLoadingError):
                    assert self.process is not None
                    if self.process.poll() is not None:
                        code = self.process.returncode
                        raise RuntimeError(f"redis-server exited with {code}") from None
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def kill9(self) -> None:
        """``kill -9``: no shutdown, no final fsync; only what reached the AOF survives."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
