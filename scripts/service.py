"""Start one Procfile process: record its pid, optionally wait for the datastores, then exec it.

Usage (from the Procfile): ``python scripts/service.py NAME [--wait] -- COMMAND ...``

The pid file (``$STREAMSHOP_RUN_DIR/NAME.pid``) lets ``scripts/run.py`` find and stop a
process left over by a run that was killed with ``kill -9``. ``--wait`` holds the API and
the workers back until Redis answers (it may still be loading its AOF), MongoDB answers
and PostgreSQL accepts connections, so honcho does not see them crash on a cold start.
The command replaces this process (``exec``), so signals and the pid stay its own.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

WAIT_SECONDS = float(os.environ.get("STREAMSHOP_WAIT_SECONDS", "120"))


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


def main() -> None:
    parser = argparse.ArgumentParser(
        usage="service.py NAME [--wait] -- COMMAND ...", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name")
    parser.add_argument("--wait", action="store_true", help="wait for Redis, MongoDB, PostgreSQL")
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("no command given after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    run_dir = os.environ.get("STREAMSHOP_RUN_DIR")
    if run_dir:
        Path(run_dir, f"{args.name}.pid").write_text(f"{os.getpid()}\n")
    if args.wait:
        wait_for_datastores(dict(os.environ))
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
