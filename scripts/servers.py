"""Starting, probing and stopping the servers streamshop runs on: one copy for all who need it.

``make run`` (``scripts/run.py``, ``scripts/service.py``), the tests (``tests/conftest.py``)
and the benchmarks (``bench/``) start ``redis-server`` and SecantusDB (``secantusd-py``),
wait for ports and ask whether a datastore answers; they all do it with this module.

Dependency rule: this module imports only the standard library (the Redis and MongoDB
drivers lazily, inside the probes) and nothing of streamshop, ``tests`` or ``bench``. The
scripts import it as ``servers`` (they run as scripts, so ``scripts/`` is on
``sys.path``); ``tests`` and ``bench`` import it as ``scripts.servers`` (they run from the
repository root). ``tests`` never import ``bench`` and ``bench`` never imports ``tests``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

# -- ports --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``host:port``; ``TimeoutError`` after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


# -- does it answer? ----------------------------------------------------------------------


def redis_ready(url: str) -> bool:
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except (RedisError, OSError):  # refused, or BusyLoadingError while the AOF replays
        return False
    finally:
        client.close()


def mongo_ready(url: str) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient = MongoClient(url, serverSelectionTimeoutMS=1000)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def tcp_ready(url: str, default_port: int) -> bool:
    """Does the host and port of ``url`` accept a connection (PostgreSQL: no driver needed)?"""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# -- processes ----------------------------------------------------------------------------


def executable(name: str) -> str:
    """``name`` on ``PATH`` or next to this Python (the virtualenv); ``RuntimeError`` if neither."""
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise RuntimeError(f"{name} is not installed")
    return found


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; the process is ours (we started it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def _serving(command: list[str], port: int, timeout: float) -> Iterator[None]:
    """Run ``command`` (a server that will listen on ``port``) until the block ends."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=timeout)
        yield
    finally:
        stop(proc)


def secantusd_command(storage_path: str | Path, port: int) -> list[str]:
    """The SecantusDB server on 127.0.0.1:``port``; ``storage_path`` may be ``:memory:``."""
    return [
        executable("secantusd-py"),
        "--storage-path",
        str(storage_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "WARNING",
    ]


@contextlib.contextmanager
def mongo_server(storage_path: str | Path, timeout: float = 30.0) -> Iterator[str]:
    """A SecantusDB process of our own on a free port; yields its URL, stops it after."""
    port = free_port()
    with _serving(secantusd_command(storage_path, port), port, timeout):
        yield f"mongodb://127.0.0.1:{port}"


DURABLE_REDIS_ARGS: tuple[str, ...] = (
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--no-appendfsync-on-rewrite",
    "no",
    "--maxmemory-policy",
    "noeviction",
)
"""What ``make run`` configures (``scripts/redis.conf.template``): AOF, fsync on every write."""


@contextlib.contextmanager
def redis_server(directory: str | Path, *args: str, timeout: float = 30.0) -> Iterator[str]:
    """A ``redis-server`` of our own on a free port with its files in ``directory``.

    ``args`` are more ``redis-server`` options (e.g. :data:`DURABLE_REDIS_ARGS`). Yields the
    URL of database 0; stops the server after.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    command = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), *args]
    with _serving(command, port, timeout):
        yield f"redis://127.0.0.1:{port}/0"
