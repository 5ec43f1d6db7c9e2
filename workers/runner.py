"""The projector runtime: feeds every partition of the log to every projection, exactly once
in effect, in order, with one owner per (projection, partition) at a time.

How it holds together:

* One consumer group per projection (named after it) on every partition stream, created at
  id 0 so a new projection folds the whole log.
* A (projection, partition) is worked on only by the process holding its lease
  (:mod:`workers.leases`). Group reads run in a script that checks the lease first, so a
  process that lost its lease gets nothing delivered: no entry is ever stranded in a dead
  owner's pending list behind entries its successor already applied.
* The only resume point is the position the view has durably applied: its own checkpoint,
  read from the sink. A new owner, and every owner after any sink error, first *re-feeds*
  the partition from that checkpoint up to what the group has delivered (a fenced
  ``XRANGE``), in log order, and acknowledges it; only then does it claim what is still
  pending and read new entries. The group's position and pending list say what was
  delivered, never what the view holds: a sink that lost acknowledged writes (a crashed
  server, a restored backup) or a bulk write cut half-way is thereby finished by a replay.
  Projections are idempotent, so re-applying what the view already holds is a no-op.
* An entry is acknowledged only after ``apply`` returned (the projection's write is durable).
* A failing sink (:data:`SINK_ERRORS`) is waited out with capped exponential backoff, lease
  kept, nothing acknowledged, and then the partition is re-fed from the view's checkpoint;
  the other partitions of that projection re-feed too (their writes went to the same sink).
  Any other failure is the entry's fault: it is isolated, retried ``max_attempts`` times,
  then dead-lettered (:mod:`workers.dlq`) and the partition goes on.
* A dead-lettered entry parks its sequence (its aggregate's later entries for that
  projection): before applying a batch the runner looks its sequences up in the DLQ and
  parks the entries of parked ones behind their head instead of applying them.
* Processes share partitions fairly: each takes at most ``ceil(partitions / live processes)``
  and hands surplus leases over after the batch in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg
import pymongo.errors
import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from events.codec import RecordedEvent, decode_entry, undecodable
from events.connection import OUTAGE
from events.errors import MalformedEvent
from events.keys import Keys
from events.positions import parse_stream_id
from events.store import EventStore
from projections.base import Projection, SinkUnavailable
from workers.dlq import DeadLetters, metrics_key, sequence_of
from workers.leases import Held, Leases
from workers.tracing import Tracer, apply_span, global_tracer

log = structlog.get_logger("workers.runner")

SINK_ERRORS: tuple[type[BaseException], ...] = (
    SinkUnavailable,
    ConnectionError,
    TimeoutError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.TransactionRollbackError,
    pymongo.errors.ConnectionFailure,
)
"""Errors that mean "the view's store is unreachable", not "this event is bad". A deadlock or a
serialization failure (``TransactionRollbackError``) is the server undoing a transaction
because of other transactions: retrying the same batch is the cure, so it counts as the
sink's, and the partition re-feeds from the checkpoint the rollback left."""

REDIS_TRANSIENT = OUTAGE
"""Redis errors waited out with backoff (:data:`events.connection.OUTAGE`)."""

Entry = tuple[bytes, dict[bytes, bytes] | None]
T = TypeVar("T")

FENCED_RANGE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
return redis.call('XRANGE', KEYS[2], '(' .. ARGV[2], ARGV[3], 'COUNT', ARGV[4])
"""
"""KEYS: lease, log stream. ARGV: holder, after (exclusive), through (inclusive), count.
Returns ``false`` when the caller does not hold the lease, else the entries: a re-feed is
fenced like a group read (see :data:`workers.leases.FENCED_READ`)."""


def is_sink_error(exc: BaseException) -> bool:
    """A sink error, also when a projection wrapped one (``raise X from ConnectionError``)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, SINK_ERRORS):
            return True
        current, seen = current.__cause__, seen + 1
    return False


def _sid(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def blocking_client(redis: aioredis.Redis, block_ms: int) -> aioredis.Redis:
    """A client on its own pool for blocking reads, whose socket timeout outlasts ``BLOCK``."""
    if isinstance(redis, RedisCluster):
        # Every node the client knows, not only its default one: a worker (re)started
        # while that node is down (a primary's restart) still finds the cluster. A client
        # that has not sent a command yet knows only its startup nodes.
        known = redis.get_nodes() or redis.startup_nodes
        nodes = [ClusterNode(n.host, n.port) for n in known]
        return RedisCluster(  # type: ignore[return-value]
            startup_nodes=nodes, socket_timeout=block_ms / 1000 + 5.0
        )
    pool = redis.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = block_ms / 1000 + 5.0
    return aioredis.Redis(
        connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs)
    )


class _Stop(Exception):
    """Internal: the worker must stop now (shutdown, hand-over or lost lease) without acking."""


class _Resync(Exception):
    """Internal: the sink failed (here or for another partition of the projection); drop the
    batch in hand and re-feed the partition from the view's own checkpoint."""


class ProjectorRunner:
    """Runs ``projections`` over every partition of the log until :meth:`stop` is called.

    ``consumer`` names this process: it is the lease holder and the consumer name in every
    group, so it must be unique among live processes. Projections' ``apply`` is called
    concurrently for different partitions (never for the same one).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        projections: Sequence[Projection],
        *,
        consumer: str,
        batch: int = 500,
        block_ms: int = 1000,
        lease_ms: int = 10_000,
        max_attempts: int = 5,
        retry_base_ms: int = 200,
        retry_max_ms: int = 5_000,
        backoff_base_ms: int = 200,
        backoff_max_ms: int = 30_000,
        reader: aioredis.Redis | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        if len({p.name for p in projections}) != len(projections):
            raise ValueError("projection names must be unique")
        self.redis = redis
        self.keys = keys
        self.projections = list(projections)
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.lease_ms = lease_ms
        self.max_attempts = max_attempts
        self.retry_base_ms = retry_base_ms
        self.retry_max_ms = retry_max_ms
        self.backoff_base_ms = backoff_base_ms
        self.backoff_max_ms = backoff_max_ms
        self.leases = Leases(redis, keys, consumer, lease_ms)
        self.dead_letters = DeadLetters(redis, keys)
        self._reader = reader
        self._own_reader = reader is None
        self.tracer = tracer if tracer is not None else global_tracer()
        """Traces of each apply (``None``: tracing off, no span is made)."""
        self._stopping = asyncio.Event()
        self._workers: dict[tuple[str, int], _PartitionWorker] = {}
        self._range = redis.register_script(FENCED_RANGE)
        self.store = EventStore(redis, keys)
        """The log reader for what moved to the archive (see :meth:`_refeed_archived`)."""
        self.sink_epochs: dict[str, int] = {p.name: 0 for p in self.projections}
        """Sink failures seen per projection: a partition worker that synced at an older
        epoch re-feeds from the view's checkpoint before it applies anything more."""

    @property
    def tick(self) -> float:
        """Seconds between lease renewals: a third of the lease, so two may fail in a row."""
        return self.lease_ms / 3000

    def stop(self) -> None:
        """Ask for a graceful stop: finish and ack the batches in hand, release the leases."""
        self._stopping.set()

    def owned(self) -> dict[str, list[int]]:
        """Partitions this process currently works on, per projection."""
        result: dict[str, list[int]] = {p.name: [] for p in self.projections}
        for (name, partition), worker in self._workers.items():
            if not worker.task.done():
                result[name].append(partition)
        return {name: sorted(ps) for name, ps in result.items()}

    async def ensure_groups(self) -> None:
        """Create each projection's consumer group on every partition (at id 0) if missing."""
        for projection in self.projections:
            for partition in range(self.keys.partitions):
                await self._ensure_group(projection.name, partition)

    async def _ensure_group(self, name: str, partition: int) -> None:
        try:
            await self.redis.xgroup_create(self.keys.log(partition), name, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Own leases, run partition workers, rebalance, until stopped; then shut down cleanly."""
        if self._reader is None:
            self._reader = blocking_client(self.redis, self.block_ms)
        await self.ensure_groups()
        log.info(
            "runner_started",
            consumer=self.consumer,
            projections=[p.name for p in self.projections],
            partitions=self.keys.partitions,
            lease_ms=self.lease_ms,
        )
        try:
            while not self._stopping.is_set():
                await self._tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.tick)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for worker in self._workers.values():
            worker.request_stop("shutdown")
        pending = {w.task for w in self._workers.values()}
        while pending:
            _, pending = await asyncio.wait(pending, timeout=self.tick)
            if pending:
                await self._renew_all()
        self._reap()
        for projection in self.projections:
            with contextlib.suppress(*REDIS_TRANSIENT):
                await self.leases.leave(projection.name)
        if self._own_reader and self._reader is not None:
            await self._reader.aclose()
            if not isinstance(self._reader, RedisCluster):  # a cluster's aclose closes its nodes
                await self._reader.connection_pool.disconnect()
            self._reader = None
        log.info("runner_stopped", consumer=self.consumer)

    def _reap(self) -> None:
        for key, worker in list(self._workers.items()):
            if worker.task.done():
                del self._workers[key]
                if not worker.task.cancelled() and (exc := worker.task.exception()):
                    log.error(
                        "partition_worker_failed",
                        projection=key[0],
                        partition=key[1],
                        error=_error(exc),
                        exc_info=exc,
                    )

    async def _renew_all(self) -> None:
        for worker in list(self._workers.values()):
            if worker.task.done() or worker.lost:
                continue
            try:
                ok = await self.leases.renew(worker.held)
            except REDIS_TRANSIENT as exc:
                log.warning(
                    "lease_renew_error",
                    projection=worker.projection.name,
                    partition=worker.partition,
                    error=_error(exc),
                )
                ok = worker.held.valid()
            if not ok:
                log.warning(
                    "lease_lost",
                    projection=worker.projection.name,
                    partition=worker.partition,
                    consumer=self.consumer,
                )
                worker.lose()

    async def _tick(self) -> None:
        """Renew what we hold, hand over surplus, take free partitions up to our fair share."""
        self._reap()
        await self._renew_all()
        for projection in self.projections:
            name = projection.name
            try:
                live = await self.leases.heartbeat(name)
            except REDIS_TRANSIENT as exc:
                log.warning("heartbeat_error", projection=name, error=_error(exc))
                continue
            fair = math.ceil(self.keys.partitions / max(live, 1))
            mine = sorted(
                (w for (n, _), w in self._workers.items() if n == name and not w.stopping),
                key=lambda w: w.partition,
            )
            for worker in mine[fair:]:
                log.info(
                    "lease_handover",
                    projection=name,
                    partition=worker.partition,
                    consumer=self.consumer,
                    live=live,
                )
                worker.request_stop("handover")
            if len(mine) >= fair:
                continue
            want = fair - len(mine)
            offset = hash(self.consumer) % self.keys.partitions
            for i in range(self.keys.partitions):
                if want == 0 or self._stopping.is_set():
                    break
                partition = (offset + i) % self.keys.partitions
                if (name, partition) in self._workers:
                    continue
                try:
                    held = await self.leases.acquire(name, partition)
                    if held is None:
                        continue
                    await self._ensure_group(name, partition)
                except REDIS_TRANSIENT as exc:
                    log.warning("lease_acquire_error", projection=name, error=_error(exc))
                    break
                log.info(
                    "lease_acquired", projection=name, partition=partition, owner=self.consumer
                )
                worker = _PartitionWorker(self, projection, held)
                self._workers[(name, partition)] = worker
                want -= 1


class _PartitionWorker:
    """Works one (projection, partition) while this process holds its lease."""

    def __init__(self, runner: ProjectorRunner, projection: Projection, held: Held) -> None:
        self.runner = runner
        self.projection = projection
        self.held = held
        self.partition = held.partition
        self.stream = runner.keys.log(held.partition)
        self.lost = False
        self.stopping = False
        self.reason = ""
        self.synced_epoch = -1
        self._outage = 0
        self._stop = asyncio.Event()
        self._parked: set[str] = set()
        """Sequences parked in the DLQ, as of the batch in hand (see :meth:`_process`)."""
        self._sequences: dict[str, str] = {}
        self._log = log.bind(projection=projection.name, partition=held.partition)
        self.task = asyncio.create_task(
            self._main(), name=f"project:{projection.name}:{held.partition}"
        )

    # -- control -----------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if not self.stopping:
            self.stopping, self.reason = True, reason
            self._stop.set()

    def lose(self) -> None:
        self.lost = True
        self.request_stop("lease lost")

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but raise :class:`_Stop` as soon as a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        if self.stopping:
            raise _Stop

    async def _redis(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis call, retrying transient errors with backoff until it works or we stop."""
        attempt = 0
        while True:
            try:
                return await call()
            except REDIS_TRANSIENT as exc:
                attempt += 1
                delay = _backoff(attempt, self.runner.backoff_base_ms, self.runner.backoff_max_ms)
                self._log.warning("redis_error", op=what, error=_error(exc), retry_in_ms=delay)
                await self._sleep(delay / 1000)

    # -- main loop ---------------------------------------------------------------------

    async def _main(self) -> None:
        try:
            while True:
                try:
                    await self._resync()
                    await self._claim_pending()
                    await self._follow()
                    return
                except _Resync:
                    continue
        except _Stop:
            pass
        finally:
            await self._release()

    async def _release(self) -> None:
        if self.lost:
            return
        try:
            released = await self.runner.leases.release(self.projection.name, self.partition)
        except REDIS_TRANSIENT as exc:
            self._log.warning("lease_release_error", error=_error(exc))
            return
        self._log.info(
            "lease_released", owner=self.runner.consumer, reason=self.reason, released=released
        )

    # -- resuming from the view -------------------------------------------------------

    def _check_epoch(self) -> None:
        if self.synced_epoch != self.runner.sink_epochs[self.projection.name]:
            raise _Resync

    def _sink_failed(self, exc: BaseException, first_entry_id: str = "", event_id: str = "") -> int:
        """Count a sink failure (for every worker of the projection); the delay to wait, ms."""
        r = self.runner
        r.sink_epochs[self.projection.name] += 1
        self._outage += 1
        delay = _backoff(self._outage, r.backoff_base_ms, r.backoff_max_ms)
        self._log.warning(
            "sink_unavailable",
            error=_error(exc),
            attempt=self._outage,
            retry_in_ms=delay,
            first_entry_id=first_entry_id,
            event_id=event_id,
        )
        return delay

    async def _view_checkpoint(self) -> str | None:
        """The view's own checkpoint for this partition, waiting out failures (no entry is
        to blame for a checkpoint that cannot be read). The worker counts as synced at the
        sink epoch of the read that worked."""
        while True:
            if self.lost:
                raise _Stop
            epoch = self.runner.sink_epochs[self.projection.name]
            try:
                checkpoint = await self.projection.checkpoint(self.partition)
            except Exception as exc:
                delay = self._sink_failed(exc)
                await self._metric("sink_failures")
                await self._sleep(delay / 1000)
                continue
            self.synced_epoch = epoch
            return checkpoint

    async def _resync(self) -> None:
        """Re-feed the partition from the view's checkpoint through the group's position.

        Everything the group delivered past what the view durably holds is applied again in
        log order and acknowledged (pending or not: an acknowledged entry the sink has lost
        comes back this way). A sink failure meanwhile raises :class:`_Resync` again.
        """
        r = self.runner
        checkpoint = await self._view_checkpoint()
        through = await self._group_position()
        after = checkpoint or "0-0"
        after, replayed = await self._refeed_archived(after)
        while parse_stream_id(after) < parse_stream_id(through):
            reply = await self._redis(
                "xrange",
                lambda a=after: r._range(
                    keys=[r.keys.lease(self.projection.name, self.partition), self.stream],
                    args=[r.consumer, a, through, r.batch],
                ),
            )
            if reply is None:
                self._log.warning("lease_lost", owner=r.consumer, detected="resync")
                self.lost = True
                self.request_stop("lease lost")
                raise _Stop
            if not reply:
                break
            entries: list[Entry] = []
            for entry_id, flat in reply:
                it = iter(flat)
                entries.append((entry_id, dict(zip(it, it, strict=True))))
            await self._process(entries)
            replayed += len(entries)
            after = _sid(entries[-1][0])
        self._log.info(
            "partition_resynced",
            checkpoint=checkpoint,
            through=through,
            replayed=replayed,
            owner=r.consumer,
        )

    async def _refeed_archived(self, after: str) -> tuple[str, int]:
        """Feed what the view lacks of the partition's archived part (a new view, or a
        store that lost writes), in order, through the store's one log reader; the lease is
        checked before each batch, as the fenced range does. Returns the position reached
        and the entries fed."""
        r = self.runner
        marker = await r.redis.get(r.keys.archived(self.partition))
        fed = 0
        while marker is not None and parse_stream_id(after) < parse_stream_id(marker.decode()):
            if await r.redis.get(r.keys.lease(self.projection.name, self.partition)) != (
                r.consumer.encode()
            ):
                self._log.warning("lease_lost", owner=r.consumer, detected="resync")
                self.lost = True
                self.request_stop("lease lost")
                raise _Stop
            rows = await r.store.read_raw(self.partition, after, r.batch, through=marker.decode())
            if not rows:
                break
            await self._process([(entry_id.encode(), fields) for entry_id, fields in rows])
            fed += len(rows)
            after = rows[-1][0]
        return after, fed

    async def _claim_pending(self) -> None:
        """Move every pending entry of this partition's group to us; they are re-read in order."""
        r = self.runner
        cursor: bytes | str = "0-0"
        claimed = 0
        while True:
            reply = await self._redis(
                "xautoclaim",
                lambda c=cursor: r.redis.xautoclaim(
                    self.stream, self.projection.name, r.consumer, 0, c, count=r.batch
                ),
            )
            cursor, entries = reply[0], reply[1]
            claimed += len(entries)
            if _sid(cursor) == "0-0":
                break
        if claimed:
            self._log.info("pending_claimed", count=claimed, owner=r.consumer)

    async def _follow(self) -> None:
        """Drain our pending entries (``0``), then read new ones (``>``), until stopped."""
        r = self.runner
        start = "0"
        last_delivered: str | None = None
        woken = False
        while not self.stopping:
            self._check_epoch()
            try:
                entries = await r.leases.fenced_read(
                    self.projection.name, self.partition, r.consumer, r.batch, start
                )
            except REDIS_TRANSIENT as exc:
                # The read may have delivered entries whose reply we lost: re-read our own.
                self._log.warning("redis_error", op="xreadgroup", error=_error(exc))
                start, last_delivered = "0", None
                await self._sleep(r.backoff_base_ms / 1000)
                continue
            if entries is None:
                self._log.warning("lease_lost", owner=r.consumer, detected="read")
                self.lost = True
                self.request_stop("lease lost")
                return
            if entries:
                woken = False
                await self._process(entries)
                if start == ">":
                    last_delivered = _sid(entries[-1][0])
                else:
                    start = _sid(entries[-1][0])
                continue
            if start != ">":
                start = ">"
                continue
            if last_delivered is None or woken:
                # Re-read the group's position when a wake-up brought nothing (someone moved
                # the group, e.g. XGROUP SETID), so the wait cannot spin.
                last_delivered = await self._group_position()
            woken = await self._wait_for_entries(last_delivered)

    async def _group_position(self) -> str:
        groups = await self._redis(
            "xinfo_groups", lambda: self.runner.redis.xinfo_groups(self.stream)
        )
        for group in groups:
            if _sid(group["name"]) == self.projection.name:
                return _sid(group["last-delivered-id"])
        return "0-0"

    async def _wait_for_entries(self, after: str) -> bool:
        """Block until the stream has an entry after ``after`` (or ``block_ms`` passed, or a
        stop); ``True`` if there is one. A plain XREAD has no side effects, so cancelling it
        on stop is safe."""
        reader = self.runner._reader
        assert reader is not None
        read = asyncio.ensure_future(
            reader.xread({self.stream: after}, count=1, block=self.runner.block_ms)
        )
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (read, stop):
                if not task.done():
                    task.cancel()
            await asyncio.gather(read, stop, return_exceptions=True)
        failure = read.exception() if read.done() and not read.cancelled() else None
        if isinstance(failure, REDIS_TRANSIENT):
            self._log.warning("redis_error", op="xread", error=_error(failure))
            await self._sleep(self.runner.backoff_base_ms / 1000)
        elif failure is not None:
            raise failure
        return bool(read.done() and not read.cancelled() and failure is None and read.result())

    # -- applying ----------------------------------------------------------------------

    async def _process(self, entries: list[Entry]) -> None:
        """Apply entries in log order; every one is acknowledged (applied or dead-lettered)
        before this returns, unless a stop interrupts a retry (then the rest stay pending)."""
        raw: dict[str, dict[bytes, bytes] | None] = {}
        segment: list[RecordedEvent] = []
        name = self.projection.name
        self._sequences = {
            _sid(entry_id): sequence_of(name, fields, self.partition, _sid(entry_id))
            for entry_id, fields in entries
        }
        wanted = list(self._sequences.values())
        self._parked = await self._redis(
            "dlq_parked", lambda: self.runner.dead_letters.parked(name, wanted)
        )
        for entry_id, fields in entries:
            eid = _sid(entry_id)
            raw[eid] = fields
            if self._sequences[eid] in self._parked and await self._park(eid, fields):
                continue
            if fields is None:
                # Pending, but gone from the stream: only possible if someone deleted it.
                await self._apply_segment(segment, raw)
                segment = []
                missing = LookupError("entry is pending but no longer in the log")
                await self._dead_letter(eid, None, missing, 0, "")
                continue
            try:
                segment.append(decode_entry(eid, fields, self.partition))
            except MalformedEvent as exc:
                if getattr(self.projection, "records_raw", False):
                    # The audit records it raw, in order, in the same apply and checkpoint.
                    segment.append(undecodable(eid, fields, self.partition, exc))  # type: ignore[arg-type]
                    continue
                await self._apply_segment(segment, raw)
                segment = []
                await self._retry_decode(eid, fields, exc)
        await self._apply_segment(segment, raw)

    async def _apply_segment(
        self, events: list[RecordedEvent], raw: dict[str, dict[bytes, bytes] | None]
    ) -> None:
        if not events:
            return
        started = time.perf_counter()
        failure = await self._apply(events)
        if failure is None:
            await self._ack([e.entry_id for e in events], applied=len(events))
            self._log.info(
                "batch_applied",
                count=len(events),
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                first_entry_id=events[0].entry_id,
                last_entry_id=events[-1].entry_id,
                last_event_id=events[-1].id,
            )
            return
        if len(events) > 1:
            self._log.warning(
                "batch_failed", count=len(events), error=_error(failure), isolating=True
            )
        for event in events:
            fields = raw[event.entry_id]
            if self._sequences.get(event.entry_id) in self._parked and await self._park(
                event.entry_id, fields
            ):
                continue
            await self._apply_one(event, fields, failure if len(events) == 1 else None)

    async def _apply_one(
        self, event: RecordedEvent, fields: dict[bytes, bytes] | None, failure: Exception | None
    ) -> None:
        """Apply one event, retrying an entry-level failure with backoff up to ``max_attempts``."""
        r = self.runner
        attempts = 0
        while True:
            if failure is None:
                failure = await self._apply([event])
                if failure is None:
                    await self._ack([event.entry_id], applied=1)
                    return
            attempts += 1
            if attempts >= r.max_attempts:
                await self._dead_letter(event.entry_id, fields, failure, attempts, event.id)
                return
            delay = _backoff(attempts, r.retry_base_ms, r.retry_max_ms, jitter=False)
            self._log.warning(
                "apply_retry",
                entry_id=event.entry_id,
                event_id=event.id,
                attempt=attempts,
                error=_error(failure),
                retry_in_ms=delay,
            )
            await self._metric("retries")
            await self._sleep(delay / 1000)
            failure = None

    async def _retry_decode(
        self, eid: str, fields: dict[bytes, bytes], exc: MalformedEvent
    ) -> None:
        """A malformed entry is retried like a failing apply (a rolling upgrade may be
        mid-way), then dead-lettered; once decodable it is applied on its own."""
        r = self.runner
        attempts = 1
        failure: Exception = exc
        while attempts < r.max_attempts:
            delay = _backoff(attempts, r.retry_base_ms, r.retry_max_ms, jitter=False)
            self._log.warning(
                "decode_retry",
                entry_id=eid,
                attempt=attempts,
                error=_error(failure),
                retry_in_ms=delay,
            )
            await self._metric("retries")
            await self._sleep(delay / 1000)
            attempts += 1
            try:
                event = decode_entry(eid, fields, self.partition)
            except MalformedEvent as again:
                failure = again
                continue
            await self._apply_one(event, fields, None)
            return
        event_id = fields.get(b"id", b"").decode(errors="replace")
        await self._dead_letter(eid, fields, failure, attempts, event_id)

    async def _apply(self, events: list[RecordedEvent]) -> Exception | None:
        """``apply`` once; returns an entry-level failure. A sink failure is waited out and
        raises :class:`_Resync`: a write that failed may have landed in part, and the sink may
        have lost what it acknowledged before, so the view's checkpoint says where to go on."""
        if self.lost:
            raise _Stop
        self._check_epoch()
        try:
            with apply_span(self.runner.tracer, self.projection.name, self.partition, events):
                await self.projection.apply(self.partition, events)
        except Exception as exc:
            if not is_sink_error(exc):
                return exc
            delay = self._sink_failed(exc, events[0].entry_id, events[0].id)
            await self._metric("sink_failures")
            await self._sleep(delay / 1000)
            raise _Resync from exc
        if self._outage:
            self._log.info("sink_recovered", failures=self._outage)
            self._outage = 0
        return None

    async def _dead_letter(
        self,
        eid: str,
        fields: dict[bytes, bytes] | None,
        failure: Exception,
        attempts: int,
        event_id: str,
    ) -> None:
        """Park the entry as the head of its sequence; its later entries park behind it."""
        r = self.runner
        sequence = self._sequences.get(eid) or sequence_of(
            self.projection.name, fields, self.partition, eid
        )
        dlq_id = await self._redis(
            "dlq",
            lambda: r.dead_letters.put(
                self.projection.name,
                self.partition,
                eid,
                fields,
                _error(failure),
                attempts,
                sequence=sequence,
            ),
        )
        self._parked.add(sequence)
        self._log.error(
            "dead_lettered",
            entry_id=eid,
            event_id=event_id,
            attempts=attempts,
            error=_error(failure),
            dlq_id=dlq_id,
            sequence=sequence,
        )
        await self._ack([eid])

    async def _park(self, eid: str, fields: dict[bytes, bytes] | None) -> bool:
        """Park an entry of a parked sequence behind its head, unapplied, and ack it.

        ``False`` when the sequence is no longer parked (a retry finished it since the
        batch was looked up): the entry is then applied as usual, still in order.
        """
        sequence = self._sequences[eid]
        dlq_id = await self._redis(
            "dlq_park",
            lambda: self.runner.dead_letters.park(
                self.projection.name, self.partition, eid, fields, sequence=sequence
            ),
        )
        if dlq_id is None:
            self._parked.discard(sequence)
            return False
        self._log.warning("parked", entry_id=eid, sequence=sequence, dlq_id=dlq_id)
        await self._ack([eid])
        return True

    async def _ack(self, entry_ids: list[str], applied: int = 0) -> None:
        r = self.runner

        async def ack() -> None:
            async with r.redis.pipeline(transaction=False) as pipe:
                pipe.xack(self.stream, self.projection.name, *entry_ids)
                if applied:
                    pipe.hincrby(metrics_key(r.keys, self.projection.name), "applied", applied)
                    pipe.hincrby(metrics_key(r.keys, self.projection.name), "batches", 1)
                await pipe.execute()

        await self._redis("xack", ack)

    async def _metric(self, name: str) -> None:
        with contextlib.suppress(*REDIS_TRANSIENT):
            await self.runner.redis.hincrby(
                metrics_key(self.runner.keys, self.projection.name), name, 1
            )


def _backoff(attempt: int, base_ms: int, max_ms: int, *, jitter: bool = True) -> int:
    """Capped exponential delay in ms for the ``attempt``-th consecutive failure (1-based)."""
    delay = min(max_ms, base_ms * 2 ** min(attempt - 1, 30))
    if jitter:
        delay = int(delay * random.uniform(0.75, 1.0))
    return int(delay)
