"""Prometheus metrics of the API: HTTP and commands measured per request, and Redis at scrape time.

``GET /metrics`` renders three sources in one text exposition:

* the HTTP series ``streamshop_http_*`` counted by the request layer
  (:class:`app.middleware.HttpMetrics`, in prometheus_client's process-wide registry, named
  and labelled as Litestar's Prometheus plugin did);
* this app's own registry (:class:`ApiMetrics`): command seconds (observed by the same
  request layer) and append conflicts, measured in this process;
* a snapshot of Redis taken at scrape time (:func:`snapshot`) and rendered by
  :class:`SnapshotCollector`: projection lag, dead letters, the runners' counters
  (``{prefix}:metrics:{<projection>}``) and rejected ingress entries. Every API replica
  reports the same shop-wide values; a dashboard takes ``max`` over instances.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.response import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from app.auth import PUBLIC
from app.services import services
from events.errors import VersionConflict
from events.keys import Keys
from events.positions import parse_stream_id

log = structlog.get_logger("app.metrics")


COUNTERS = {
    "dead_letters": "Entries the projection dead-lettered (heads of parked sequences)",
    "parked_followers": "Entries parked, unapplied, behind a dead letter of their sequence",
    "redriven": "Dead letters re-driven",
    "retries": "Retries of failing entries",
    "sink_failures": "Failed writes to the projection's store",
}
"""Fields of ``{prefix}:metrics:{projection}`` exposed as ``streamshop_projection_<f>_total``."""


class ApiMetrics:
    """This app's own series, in a registry of its own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.command_seconds = Histogram(
            "streamshop_command_seconds",
            "Time to execute a command over HTTP (decide and append, retries included)",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.append_conflicts = Counter(
            "streamshop_append_conflicts",
            "Appends refused by a version check (each is retried, then a 409)",
            registry=self.registry,
        )


def api_metrics(state: State) -> ApiMetrics:
    return state.metrics  # type: ignore[no-any-return]


def count_conflicts(store: Any, metrics: ApiMetrics) -> None:
    """Count every ``VersionConflict`` the store's ``append`` raises (each conflict retry
    of a command shows, not only the final 409). Wraps the one instance the app uses; the
    command handlers are not touched."""
    append: Callable[[Any], Awaitable[Any]] = store.append

    async def counted(request: Any) -> Any:
        try:
            return await append(request)
        except VersionConflict:
            metrics.append_conflicts.inc()
            raise

    store.append = counted


@dataclass(frozen=True, slots=True)
class GroupLag:
    """One projection's consumer group on one partition."""

    projection: str
    partition: int
    lag_events: int | None
    """Redis's ``XINFO GROUPS`` lag: entries not yet delivered (``None``: Redis cannot tell)."""
    oldest_unprocessed_ms: int | None
    """Timestamp of the oldest entry not yet acknowledged (``None``: caught up)."""


async def group_lags(redis: Any, keys: Keys) -> list[GroupLag]:
    """Lag of every consumer group on the log. The oldest unprocessed entry is the oldest
    pending one, else the first entry after the group's last-delivered id.

    Two pipelined round trips: every partition's groups, then each group's oldest pending
    entry and next undelivered entry."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(keys.partitions):
            pipe.xinfo_groups(keys.log(partition))
        infos = await pipe.execute(raise_on_error=False)
    groups = [
        (partition, group)
        for partition, info in enumerate(infos)
        if not isinstance(info, Exception)
        for group in info
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for partition, group in groups:
            stream, name = keys.log(partition), _text(group["name"])
            pipe.xpending(stream, name)
            after = _text(group["last-delivered-id"])
            pipe.xrange(stream, min=f"({after}", max="+", count=1)
        replies = await pipe.execute()
    rows: list[GroupLag] = []
    for i, (partition, group) in enumerate(groups):
        pending, undelivered = replies[2 * i], replies[2 * i + 1]
        oldest: str | None = None
        if int(group["pending"]) and pending.get("min"):
            oldest = _text(pending["min"])
        elif undelivered:
            oldest = _text(undelivered[0][0])
        lag = group.get("lag")
        rows.append(
            GroupLag(
                projection=_text(group["name"]),
                partition=partition,
                lag_events=None if lag is None else int(lag),
                oldest_unprocessed_ms=None if oldest is None else parse_stream_id(oldest)[0],
            )
        )
    return rows


def lag_seconds(rows: list[GroupLag], now_ms: int | None = None) -> dict[str, float]:
    """Per projection, the age of its oldest unprocessed entry over all partitions (0: caught up)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result: dict[str, float] = {}
    for row in rows:
        age = 0.0
        if row.oldest_unprocessed_ms is not None:
            age = max(0.0, (now_ms - row.oldest_unprocessed_ms) / 1000)
        result[row.projection] = max(result.get(row.projection, 0.0), age)
    return result


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What Redis says at one scrape."""

    lags: list[GroupLag]
    now_ms: int
    dlq: dict[str, int] = field(default_factory=dict)
    """Projection → entries of its dead-letter stream (parked entries included)."""
    ingest_rejected: dict[str, int] = field(default_factory=dict)
    """Ingress source → entries of its dead-letter stream."""
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    """Projection → the fields of ``{prefix}:metrics:{projection}``."""


async def snapshot(redis: Any, keys: Keys) -> Snapshot:
    """Projections are the consumer groups on the log; ingress sources are found by a
    ``SCAN`` of their dead-letter streams (the one keyspace walk of a scrape)."""
    lags = await group_lags(redis, keys)
    projections = sorted({row.projection for row in lags})
    async with redis.pipeline(transaction=False) as pipe:
        for name in projections:
            pipe.xlen(keys.dlq(name))
            pipe.hgetall(keys.metrics(name))
        replies = await pipe.execute()
    dlq = {name: int(replies[2 * i]) for i, name in enumerate(projections)}
    counters = {
        name: {_text(k): float(v) for k, v in replies[2 * i + 1].items()}
        for i, name in enumerate(projections)
    }
    ingest: dict[str, int] = {}
    pattern = f"{keys.prefix}:dlq:ingest:*"
    async for raw in redis.scan_iter(match=pattern, count=10_000, _type="stream"):
        key = _text(raw)
        if (source := keys.ingest_source_of(key)) is not None:
            ingest[source] = int(await redis.xlen(key))
    return Snapshot(
        lags=lags,
        now_ms=int(time.time() * 1000),
        dlq=dlq,
        ingest_rejected=ingest,
        counters=counters,
    )


class SnapshotCollector(Collector):
    """Renders one :class:`Snapshot` as metric families (prometheus_client collects
    synchronously, so the async Redis reads happen before, in :func:`snapshot`)."""

    def __init__(self, snap: Snapshot | None) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "streamshop_redis_up", "1 if this scrape could read Redis (else no Redis series)"
        )
        up.add_metric([], 0 if self.snap is None else 1)
        yield up
        if self.snap is None:
            return
        s = self.snap
        lag_events = GaugeMetricFamily(
            "streamshop_projection_lag_events",
            "Log entries not yet delivered to the projection (XINFO GROUPS lag)",
            labels=["projection", "partition"],
        )
        for row in s.lags:
            if row.lag_events is not None:
                lag_events.add_metric([row.projection, str(row.partition)], row.lag_events)
        yield lag_events
        lag_s = GaugeMetricFamily(
            "streamshop_projection_lag_seconds",
            "Age of the projection's oldest unprocessed log entry (0: caught up)",
            labels=["projection"],
        )
        for name, age in sorted(lag_seconds(s.lags, s.now_ms).items()):
            lag_s.add_metric([name], age)
        yield lag_s
        dlq = GaugeMetricFamily(
            "streamshop_dlq_entries",
            "Entries in the projection's dead-letter stream (parked entries included)",
            labels=["projection"],
        )
        for name, size in sorted(s.dlq.items()):
            dlq.add_metric([name], size)
        yield dlq
        rejected = CounterMetricFamily(
            "streamshop_ingest_rejected",
            "Ingress entries dead-lettered (length of the source's dead-letter stream)",
            labels=["source"],
        )
        for source, size in sorted(s.ingest_rejected.items()):
            rejected.add_metric([source], size)
        yield rejected
        yield from self._counters(s.counters)

    @staticmethod
    def _counters(counters: dict[str, dict[str, float]]) -> Iterator[Any]:
        events = CounterMetricFamily(
            "streamshop_projection_events",
            "Events the projection applied and acknowledged",
            labels=["projection"],
        )
        batches = CounterMetricFamily(
            "streamshop_projection_batches",
            "Batches the projection acknowledged",
            labels=["projection"],
        )
        seconds = SummaryMetricFamily(
            "streamshop_projection_batch_seconds",
            "Time in the projection's apply, per call (recorded by `streamshop project`)",
            labels=["projection"],
        )
        named = {
            f: CounterMetricFamily(f"streamshop_projection_{f}", doc, labels=["projection"])
            for f, doc in COUNTERS.items()
        }
        for name, fields in sorted(counters.items()):
            events.add_metric([name], fields.get("applied", 0.0))
            batches.add_metric([name], fields.get("batches", 0.0))
            if "apply_calls" in fields:
                seconds.add_metric([name], fields["apply_calls"], fields.get("apply_seconds", 0.0))
            for f, family in named.items():
                family.add_metric([name], fields.get(f, 0.0))
        yield events
        yield batches
        yield seconds
        yield from named.values()


@get(
    "/metrics",
    opt=PUBLIC,
    security=[{}],
    tags=["ops"],
    operation_id="metrics",
    include_in_schema=False,
)
async def metrics(state: State) -> Response[bytes]:
    """Prometheus text exposition: HTTP series, this process's series, and Redis at scrape
    time. With Redis unreachable it still answers, with ``streamshop_redis_up 0``."""
    store = services(state).store
    try:
        snap: Snapshot | None = await snapshot(store.redis, store.keys)
    except (RedisError, OSError) as exc:
        log.warning("metrics_redis_unreachable", error=str(exc))
        snap = None
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(SnapshotCollector(snap))
    body = generate_latest(REGISTRY) + generate_latest(api_metrics(state).registry)
    body += generate_latest(scraped)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def metrics_lifespan(app: Litestar) -> AsyncIterator[None]:
    """After the event store is up: count its version conflicts in this app's metrics."""
    store = getattr(app.state, "store", None)
    if store is not None:
        count_conflicts(store, api_metrics(app.state))
    yield


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
