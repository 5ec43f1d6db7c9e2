"""``make test`` preflight: are the machine's Redis and PostgreSQL there for the suite?

The suite runs against real servers (no mocks): Redis on ``TEST_REDIS_URL``
(127.0.0.1:6379), PostgreSQL on ``TEST_PG_DSN`` (127.0.0.1:5432, user ``postgres``), and
the ``redis-server`` binary, which the durability tests start on their own ports. This
says plainly what is missing instead of letting fifty tests fail with connection errors.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def check_redis() -> str | None:
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        version = str(client.info("server")["redis_version"])
    except (RedisError, OSError) as exc:
        return (
            f"Redis is not running at {REDIS_URL} ({exc}).\n"
            "    Start it (Debian/Ubuntu: `sudo apt-get install -y redis-server && "
            "sudo service redis-server start`) or set TEST_REDIS_URL."
        )
    finally:
        client.close()
    if tuple(int(x) for x in version.split(".")[:2]) < (7, 0):
        return f"Redis at {REDIS_URL} is {version}; streamshop needs Redis 7.0 or newer."
    return None


def check_postgres() -> str | None:
    import asyncpg

    async def connect() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        await conn.close()

    try:
        asyncio.run(connect())
    except Exception as exc:  # refused, auth, missing role: all need the same advice
        return (
            f"PostgreSQL is not usable at {PG_DSN} ({exc}).\n"
            "    Start it (Debian/Ubuntu: `sudo apt-get install -y postgresql && "
            "sudo service postgresql start`), allow the `postgres` user to connect over TCP "
            "without a password (trust), or set TEST_PG_DSN."
        )
    return None


def check_redis_server_binary() -> str | None:
    if shutil.which("redis-server"):
        return None
    return (
        "redis-server is not on PATH; the durability tests start their own.\n"
        "    Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`)."
    )


def main() -> int:
    problems = [p for p in (check_redis(), check_postgres(), check_redis_server_binary()) if p]
    for problem in problems:
        print(f"make test: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
