"""``streamshop ingest``: run the ingress gateway for external producers until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

import prometheus_client

from app.settings import Settings
from events.store import EventStore, check_redis
from workers.dlq import migrate_key_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME",
        help="serve {prefix}:ingest:NAME (repeatable); without it: 'produtos' plus every "
        "ingress stream found, looked up again periodically",
    )
    parser.add_argument("--batch", type=int, default=100, help="entries per XREADGROUP")
    parser.add_argument("--block-ms", type=int, default=1000, help="XREADGROUP BLOCK")
    parser.add_argument(
        "--discover-interval", type=float, default=5.0, help="seconds between stream look-ups"
    )
    parser.add_argument("--consumer", default=None, help="consumer name (default: host name)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from workers.ingest import DEFAULT_SOURCES, IngestGateway

    keys = settings.redis.keys
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    redis = settings.redis.connect()
    try:
        await check_redis(redis)
        await migrate_key_names(redis, keys)
        store = EventStore(redis, keys, replica_wait=settings.redis.replica_wait)
        if not await store.functions_loaded():
            await store.load_functions()
        gateway = IngestGateway(
            redis,
            store,
            keys,
            args.source or DEFAULT_SOURCES,
            discover=not args.source,
            discover_interval=args.discover_interval,
            consumer=args.consumer,
            batch=args.batch,
            block_ms=args.block_ms,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop)
        await gateway.run()
    finally:
        await redis.aclose()
    return 0
