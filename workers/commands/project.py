"""``streamshop project [names…]``: run projectors until SIGTERM/SIGINT (the Procfile's worker)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import prometheus_client
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from app.settings import Settings
from events.codec import RecordedEvent
from events.keys import Keys
from projections.base import Projection
from projections.identity import ForeignView, ViewVersionMismatch
from workers.dlq import metrics_key, migrate_key_names
from workers.rebuild import RebuildAborted
from workers.registry import PROJECTIONS, open_projections
from workers.runner import ProjectorRunner

APPLY_SECONDS = prometheus_client.Histogram(
    "streamshop_projection_apply_seconds",
    "Time in one apply call of a projection (this process)",
    ["projection"],
)


class TimedProjection:
    """A projection whose ``apply`` is timed: into this process's histogram (``METRICS_PORT``)
    and into ``{prefix}:metrics:{projection}`` (``apply_seconds``, ``apply_calls``), which the
    API's ``/metrics`` shows as ``streamshop_projection_batch_seconds``."""

    def __init__(self, inner: Projection, redis: aioredis.Redis, keys: Keys) -> None:
        self._inner = inner
        self._redis = redis
        self._key = metrics_key(keys, inner.name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        started = time.perf_counter()
        try:
            await self._inner.apply(partition, events)
        finally:
            elapsed = time.perf_counter() - started
            APPLY_SECONDS.labels(self._inner.name).observe(elapsed)
            with contextlib.suppress(RedisError, OSError):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hincrbyfloat(self._key, "apply_seconds", elapsed)
                    pipe.hincrby(self._key, "apply_calls", 1)
                    await pipe.execute()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        help="registered projections or module:factory specs (default: all registered)",
    )
    parser.add_argument(
        "--consumer",
        default=None,
        help="this process's name, unique among live projectors (default: host-pid-random)",
    )
    parser.add_argument("--batch", type=int, default=500, help="entries per read (COUNT)")
    parser.add_argument("--block-ms", type=int, default=1000, help="blocking read time (BLOCK)")
    parser.add_argument(
        "--lease-ms", type=int, default=10_000, help="partition lease time; renewed every third"
    )
    parser.add_argument(
        "--max-attempts", type=int, default=5, help="tries of a failing entry before the DLQ"
    )
    parser.add_argument(
        "--retry-ms", type=int, default=200, help="first retry delay of a failing entry"
    )
    parser.add_argument(
        "--backoff-max-ms", type=int, default=30_000, help="longest wait for a sink that is down"
    )


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.names and not PROJECTIONS:
        print("no projections registered; name one (module:factory)")
        return 2
    runner: ProjectorRunner | None = None
    stop_requested = False

    def on_signal() -> None:
        nonlocal stop_requested
        stop_requested = True
        if runner is not None:
            runner.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    redis = settings.redis.connect()
    try:
        await migrate_key_names(redis, settings.redis.keys)
        async with open_projections(settings, args.names) as projections:
            timed: list[Any] = [TimedProjection(p, redis, settings.redis.keys) for p in projections]
            runner = ProjectorRunner(
                redis,
                settings.redis.keys,
                timed,
                consumer=args.consumer or default_consumer(),
                batch=args.batch,
                block_ms=args.block_ms,
                lease_ms=args.lease_ms,
                max_attempts=args.max_attempts,
                retry_base_ms=args.retry_ms,
                retry_max_ms=max(args.retry_ms, 5_000),
                backoff_base_ms=min(200, args.backoff_max_ms),
                backoff_max_ms=args.backoff_max_ms,
            )
            if stop_requested:
                runner.stop()
            await runner.run()
    except ForeignView as exc:  # met at start-up (setup): refuse to mix two logs in one view
        structlog.get_logger("workers.project").error(
            "view_of_other_log_refused", view=exc.view, view_log=exc.recorded, log=exc.log
        )
        print(f"project refused: {exc}", file=sys.stderr)
        return 2
    except ViewVersionMismatch as exc:  # a view built by a newer projection than this code
        structlog.get_logger("workers.project").error(
            "view_of_other_version_refused", view=exc.view, built_by=exc.built, version=exc.code
        )
        print(f"project refused: {exc}", file=sys.stderr)
        return 2
    except RebuildAborted as exc:  # the upgrade of an outdated view failed: nothing switched
        print(f"project refused: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    return 0
