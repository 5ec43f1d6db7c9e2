"""Start one Procfile process: record its pid, order its start and stop against the others.

Usage (from the Procfile):
``python scripts/service.py NAME [--wait] [--outlive NAME,...] -- COMMAND ...``

The pid file (``$STREAMSHOP_RUN_DIR/NAME.pid``) lets ``scripts/run.py`` find and stop a
process left over by a run that was killed with ``kill -9``.

``--wait`` holds the API and the workers back until Redis answers (it may still be
loading its AOF), MongoDB answers and PostgreSQL accepts connections, so honcho does not
see them crash on a cold start. The command then replaces this process (``exec``).

``--outlive`` is for the datastores. honcho stops every process at once, but the API and
the workers still write (in-flight commands, checkpoints, lease releases) while they stop.
So the server runs as a child in its own process group, out of reach of honcho's signal;
on SIGTERM this wrapper waits until the named processes are gone (at most
``OUTLIVE_SECONDS``, below honcho's 5 s before SIGKILL), then stops the server. Should the
wrapper be killed anyway, the kernel sends the server SIGTERM (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

WAIT_SECONDS = float(os.environ.get("STREAMSHOP_WAIT_SECONDS", "120"))
OUTLIVE_SECONDS = 3.5
PR_SET_PDEATHSIG = 1


def _redis_ready(url: str) -> bool:
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except (RedisError, OSError):  # refused, or BusyLoadingError while the AOF replays
        return False
    finally:
        client.close()


def _mongo_ready(url: str) -> bool:
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


def _tcp_ready(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def wait_for_datastores(env: dict[str, str]) -> None:
    """Block until every configured datastore answers, or exit after ``WAIT_SECONDS``."""
    checks = {
        "Redis": lambda: _redis_ready(env["REDIS_URL"]),
        "MongoDB": lambda: _mongo_ready(env["MONGO_URL"]),
        "PostgreSQL": lambda: _tcp_ready(env["DATABASE_URL"], 5432),
    }
    deadline = time.monotonic() + WAIT_SECONDS
    for name, ready in checks.items():
        while not ready():
            if time.monotonic() > deadline:
                sys.exit(f"{name} did not become ready within {WAIT_SECONDS:.0f}s")
            time.sleep(0.2)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the wrapper dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids(run_dir: Path | None, names: list[str]) -> list[int]:
    pids = []
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            if run_dir is not None:
                pids.append(int((run_dir / f"{name}.pid").read_text()))
    return pids


def supervise(command: list[str], run_dir: Path | None, name: str, outlive: list[str]) -> int:
    """Run ``command`` as a child; on SIGTERM/SIGINT stop it once ``outlive`` have exited."""
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    child = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
    if run_dir is not None:
        (run_dir / f"{name}-server.pid").write_text(f"{child.pid}\n")
    while child.poll() is None and not stopping:
        time.sleep(0.1)
    if child.poll() is None:
        deadline = time.monotonic() + OUTLIVE_SECONDS
        others = _pids(run_dir, outlive)
        while any(alive(pid) for pid in others) and time.monotonic() < deadline:
            time.sleep(0.05)
        child.terminate()
    return child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        usage="service.py NAME [--wait] -- COMMAND ...", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name")
    parser.add_argument("--wait", action="store_true", help="wait for Redis, MongoDB, PostgreSQL")
    parser.add_argument("--outlive", default="", help="stop only after these processes")
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("no command given after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    run_dir = (
        Path(os.environ["STREAMSHOP_RUN_DIR"]) if os.environ.get("STREAMSHOP_RUN_DIR") else None
    )
    if run_dir is not None:
        (run_dir / f"{args.name}.pid").write_text(f"{os.getpid()}\n")
    if args.wait:
        wait_for_datastores(dict(os.environ))
    if args.outlive:
        sys.exit(supervise(command, run_dir, args.name, args.outlive.split(",")))
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
