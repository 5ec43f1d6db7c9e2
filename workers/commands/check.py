"""``streamshop check``: is this Redis fit to hold the log? Runs the startup checks, loads the functions.

Exit status: 0 when the Redis is accepted (warnings are printed), 1 when it is refused
(too old, or an eviction policy that could drop events), 2 when it cannot be reached.
``--strict`` also fails on warnings (no AOF, ``appendfsync`` not ``always``), for
deployments that must not start with weak persistence.
"""

from __future__ import annotations

import argparse
import sys

from redis.exceptions import RedisError

from app.settings import Settings
from events.errors import RedisNotSuitable
from events.store import LIBRARY, EventStore, check_redis


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict", action="store_true", help="exit non-zero on persistence warnings too"
    )
    parser.add_argument(
        "--no-load", action="store_true", help="only check; do not load the Redis functions"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.redis.url
    client = settings.redis.connect()
    try:
        warnings = await check_redis(client)
        version = (await client.info("server")).get("redis_version", "?")
        if not args.no_load:
            await EventStore(client, settings.redis.keys).load_functions()
    except RedisNotSuitable as exc:
        print(f"refused: {url}: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"unreachable: {url}: {exc}", file=sys.stderr)
        return 2
    finally:
        await client.aclose()
    loaded = "" if args.no_load else f", functions {LIBRARY} loaded"
    if args.strict and warnings:
        print(f"refused (--strict): {url}: {'; '.join(warnings)}", file=sys.stderr)
        return 1
    noted = f" ({len(warnings)} warning(s) logged above)" if warnings else ""
    print(f"ok: Redis {version} at {url}{loaded}{noted}")
    return 0
