"""The ingress gateway: external producers' streams in, catalog commands out, garbage to a DLQ.

External (Java) services ``XADD`` catalog events to ``{prefix}:ingest:<source>``; the
contract is ``docs/producers.md``. The gateway reads every ingress stream through one
consumer group (``gateway``), validates each entry against the contract
(:mod:`workers.ingest_contract`, pure), and turns a valid one into the matching catalog
command, executed by ``app.commands.execute`` — the API's own write path, with its version
checks and decision-state updates. That call into ``app/`` is the one deliberate exception
to the ``workers → events, projections`` rule: the gateway is a second entry point to the
write side, and a second, hand-written copy of the catalog rules would drift (for the same
reason the contract refuses text holding NUL with ``app.validation``'s check, as the API
does).

Every entry ends in exactly one of: appended (or recognised as a duplicate by its
producer event id), or dead-lettered to ``{prefix}:dlq:ingest:{<stream>}`` with the reason.
Only then is it acknowledged. Redis being unreachable is neither: the gateway backs off
and retries the same entry, so nothing is skipped and order within a stream is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from events.errors import AppendRejected
from events.ids import now_at
from events.keys import Keys
from events.states import AggregateState, ProductState
from events.store import AppendResult, EventStore, Metadata
from events.types import ProductCreated, ProductDeleted, ProductUpdated, StockAdjusted
from workers import legacy_feed
from workers.dlq import META
from workers.ingest_contract import (
    MAX_ENTRY_BYTES,
    CatalogEvent,
    Invalid,
    entry_size,
    validate,
    validate_legacy,
)
from workers.runner import REDIS_TRANSIENT, blocking_client

log = structlog.get_logger("workers.ingest")

GROUP = "gateway"
DEFAULT_SOURCES: tuple[str, ...] = ("produtos",)
"""Streams the gateway always serves, discovered or not (the legacy feed)."""
LEGACY_SOURCES: frozenset[str] = frozenset({"produtos"})
"""Sources whose entries may carry the legacy ``payload`` field instead of an event."""
_DLQ_VALUE_MAX_CHARS = 4096
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class Execute(Protocol):
    """``app.commands.execute``: one catalog command through the API's write path."""

    def __call__(
        self,
        store: EventStore,
        command: Any,
        meta: Metadata,
        *,
        idempotency_key: str | None = None,
        event_id: str | None = None,
    ) -> Awaitable[AppendResult]: ...


# -- outcomes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why an entry was refused: ``kind`` is ``invalid`` (broke the contract), ``rejected``
    (a valid event the write side refused) or ``internal`` (the gateway failed on it)."""

    kind: str
    reason: str
    field: str = ""
    event_id: str = ""


@dataclass(slots=True)
class GatewayStats:
    """Counters since start; logged on shutdown, read by tests and operators."""

    appended: int = 0
    duplicates: int = 0
    unchanged: int = 0
    dead_lettered: int = 0
    transient_errors: int = 0


_TRANSIENT = (*REDIS_TRANSIENT, ConnectionError, TimeoutError, OSError)
"""An outage of Redis (a cluster's ``CLUSTERDOWN`` included, see ``REDIS_TRANSIENT``)."""


class IngestGateway:
    """Serves ingress streams until :meth:`stop`; see the module docstring for the contract.

    ``sources`` are always served; with ``discover`` every ``{prefix}:ingest:*`` stream is
    served too, looked up again every ``discover_interval`` seconds. Entries another
    gateway process left pending for ``claim_idle_ms`` are claimed (``XAUTOCLAIM``).
    Run one gateway process per deployment: a second would share a stream's entries and
    could reorder a product's events.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        store: EventStore,
        keys: Keys,
        sources: Iterable[str] = DEFAULT_SOURCES,
        *,
        execute: Execute | None = None,
        reader: aioredis.Redis | None = None,
        discover: bool = True,
        discover_interval: float = 5.0,
        group: str = GROUP,
        consumer: str | None = None,
        batch: int = 100,
        block_ms: int = 1000,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        claim_idle_ms: int = 60_000,
        backoff_max: float = 5.0,
        legacy_sources: frozenset[str] = LEGACY_SOURCES,
    ) -> None:
        self.redis = redis
        self.store = store
        self.keys = keys
        self.sources: set[str] = set(sources)
        for source in self.sources:
            if not _SOURCE_NAME.match(source):
                raise ValueError(f"bad source name {source!r}")
        if execute is None:
            from app.commands import execute as run_command

            execute = run_command
        self._execute: Execute = execute
        self._reader = reader
        self._own_reader = reader is None
        self.discover = discover
        self.discover_interval = discover_interval
        self.group = group
        self.consumer = consumer or socket.gethostname()
        self.batch = batch
        self.block_ms = block_ms
        self.max_entry_bytes = max_entry_bytes
        self.claim_idle_ms = claim_idle_ms
        self.backoff_max = backoff_max
        self.legacy_sources = legacy_sources
        self.stats = GatewayStats()
        self._grouped: set[str] = set()
        self._stopping = asyncio.Event()
        self._next_refresh = 0.0
        self._backoff = 0.0

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the entry (and batch) in hand, then return from :meth:`run`."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stream_of(self, source: str) -> str:
        return self.keys.ingest(source)

    def source_of(self, stream: str) -> str:
        return stream.removeprefix(self.keys.ingest(""))

    async def run(self) -> None:
        """Read, handle, acknowledge, until stopped. Transient Redis errors never end it."""
        if self._reader is None:
            self._reader = blocking_client(self.redis, self.block_ms)
        log.info("gateway_started", consumer=self.consumer, sources=sorted(self.sources))
        first = True
        try:
            while not self.stopping:
                try:
                    if first or time.monotonic() >= self._next_refresh:
                        await self._refresh()
                        if first:
                            await self._drain_pending()
                            first = False
                        await self._claim_abandoned()
                    await self._read_and_handle(">")
                    self._backoff = 0.0
                except _TRANSIENT as exc:
                    # A read whose reply was lost left its entries delivered to this very
                    # consumer (Redis records the delivery before it answers, in its AOF
                    # too): drain them first, not after ``claim_idle_ms`` (measured: a
                    # restock held a minute after a primary's ``kill -9`` on the cluster).
                    first = True
                    await self._transient(exc)
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    log.warning("gateway_group_missing", error=str(exc))
                    self._grouped.clear()
                    self._next_refresh = 0.0
        finally:
            if self._own_reader and self._reader is not None:
                await self._reader.aclose()
                self._reader = None
            log.info(
                "gateway_stopped",
                consumer=self.consumer,
                appended=self.stats.appended,
                duplicates=self.stats.duplicates,
                dead_lettered=self.stats.dead_lettered,
            )

    async def _transient(self, exc: BaseException) -> None:
        self.stats.transient_errors += 1
        self._backoff = min(self.backoff_max, max(0.05, self._backoff * 2))
        log.warning("gateway_redis_unavailable", error=repr(exc), retry_in=self._backoff)
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=self._backoff)
        except TimeoutError:
            pass

    # -- streams and groups --------------------------------------------------------------

    async def _refresh(self) -> None:
        """Find ingress streams and make sure each has the group (reading from its start)."""
        self._next_refresh = time.monotonic() + self.discover_interval
        if self.discover:
            pattern = self.keys.ingest("*")
            async for key in self.redis.scan_iter(match=pattern, count=1000, _type="STREAM"):
                source = self.source_of(key.decode() if isinstance(key, bytes) else key)
                if source not in self.sources:
                    if _SOURCE_NAME.match(source):
                        log.info("gateway_source_discovered", source=source)
                        self.sources.add(source)
                    else:
                        log.warning("gateway_source_ignored", source=source[:100])
        for source in sorted(self.sources - self._grouped):
            try:
                await self.redis.xgroup_create(
                    self.stream_of(source), self.group, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._grouped.add(source)

    async def _claim_abandoned(self) -> None:
        """Entries another gateway read and never acknowledged (it died) are taken over."""
        for source in sorted(self._grouped):
            start = "0-0"
            while not self.stopping:
                reply = await self.redis.xautoclaim(
                    self.stream_of(source),
                    self.group,
                    self.consumer,
                    min_idle_time=self.claim_idle_ms,
                    start_id=start,
                    count=self.batch,
                )
                start, claimed = reply[0], reply[1]
                if claimed:
                    log.info("gateway_claimed", source=source, count=len(claimed))
                    await self._handle_entries(source, claimed)
                if start in (b"0-0", "0-0"):
                    break

    async def _drain_pending(self) -> None:
        """Entries this consumer read but never acknowledged (it died mid-batch) come first."""
        while not self.stopping:
            if not await self._read_and_handle("0", block=False):
                return

    async def _read_and_handle(self, after: str, *, block: bool = True) -> int:
        if not self._grouped:
            await asyncio.sleep(min(self.block_ms / 1000, 0.5))
            return 0
        streams = {self.stream_of(source): after for source in sorted(self._grouped)}
        reply = await self._read(streams, block)
        handled = 0
        for stream, entries in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            handled += await self._handle_entries(self.source_of(name), entries)
        return handled

    async def _read(self, streams: dict[str, str], block: bool) -> list[Any]:
        """One ``XREADGROUP`` over the ingress streams. On a Redis Cluster the streams live
        in several slots: one read per slot, first without blocking, then (all were empty)
        each blocking for its share of ``block_ms``, so an entry waits no longer than on
        one node."""
        reader = self._reader
        assert reader is not None
        by_slot: dict[int, dict[str, str]] = {}
        if isinstance(reader, RedisCluster):
            for stream, after in streams.items():
                by_slot.setdefault(reader.keyslot(stream), {})[stream] = after
        groups = list(by_slot.values()) or [streams]
        if len(groups) == 1:
            return (
                await reader.xreadgroup(
                    self.group,
                    self.consumer,
                    streams,
                    count=self.batch,
                    block=self.block_ms if block else None,
                )
                or []
            )
        reply = await self._read_each(groups, None)
        if reply or not block:
            return reply
        return await self._read_each(groups, max(1, self.block_ms // len(groups)))

    async def _read_each(self, groups: list[dict[str, str]], block: int | None) -> list[Any]:
        assert self._reader is not None
        reply: list[Any] = []
        for group in groups:
            reply += (
                await self._reader.xreadgroup(
                    self.group, self.consumer, group, count=self.batch, block=block
                )
                or []
            )
        return reply

    async def _handle_entries(self, source: str, entries: list[Any]) -> int:
        """Handle a batch in order; a stop request is honoured only between batches."""
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            if not await self._handle_until_done(source, eid, fields):
                break  # stopping while Redis is away: the rest stays pending, in order
        return len(entries)

    async def _handle_until_done(
        self, source: str, entry_id: str, fields: dict[bytes, bytes] | None
    ) -> bool:
        """One entry to its end; while Redis is down or refuses writes, keep trying the same
        entry (never the next one: that would reorder a product's events). ``False``: gave
        up because of a stop request; the entry stays pending and is re-read on start."""
        while True:
            try:
                await self.handle(source, entry_id, fields)
                return True
            except _TRANSIENT as exc:
                await self._transient(exc)
            except ResponseError as exc:
                # Not the entry's fault (out of memory, functions missing after a restore):
                # dead-lettering would empty the feed into the DLQ, so wait it out loudly.
                log.error("gateway_redis_refused", source=source, entry_id=entry_id, error=str(exc))
                if "function not found" in str(exc).lower():
                    with contextlib.suppress(*_TRANSIENT, ResponseError):
                        await self.store.load_functions()
                await self._transient(exc)
            if self.stopping:
                return False

    # -- one entry -----------------------------------------------------------------------

    async def handle(self, source: str, entry_id: str, fields: dict[bytes, bytes] | None) -> None:
        """Append or dead-letter one entry, then acknowledge it."""
        stream = self.stream_of(source)
        if fields is None:  # deleted from the stream while pending: nothing left to do
            await self.redis.xack(stream, self.group, entry_id)
            return
        outcome = await self._outcome(source, entry_id, fields)
        if isinstance(outcome, DeadLetter):
            await self._dead_letter(source, entry_id, fields, outcome)
        else:
            await self.redis.xack(stream, self.group, entry_id)

    async def _outcome(
        self, source: str, entry_id: str, fields: dict[bytes, bytes]
    ) -> DeadLetter | None:
        from app.commands.errors import DomainError

        event_id = ""
        try:
            if source in self.legacy_sources and b"payload" in fields:
                await self._legacy(source, entry_id, fields)
            else:
                ingested = validate(source, fields, max_entry_bytes=self.max_entry_bytes)
                event_id = ingested.event_id
                await self._append(
                    source,
                    entry_id,
                    ingested.event,
                    ingested.meta,
                    idempotency_key=f"ingest:{source}:{ingested.event_id}",
                    event_id=ingested.event_id,
                    produced_at=ingested.at,
                )
        except Invalid as exc:
            return DeadLetter("invalid", exc.reason, exc.field, exc.event_id)
        except legacy_feed.LegacyRejected as exc:
            return DeadLetter("rejected", exc.reason, f"payload.{exc.field}" if exc.field else "")
        except DomainError as exc:
            where = "payload" if b"payload" in fields else "data"
            field = f"{where}.{exc.field}" if exc.field else ""
            return DeadLetter("rejected", exc.detail, field, event_id)
        except AppendRejected as exc:
            return DeadLetter("rejected", str(exc), "", event_id)
        except (*_TRANSIENT, ResponseError):
            raise
        except Exception as exc:  # a bug must not stop the feed; the entry is kept in the DLQ
            log.exception("gateway_internal_error", source=source, entry_id=entry_id)
            return DeadLetter("internal", f"{type(exc).__name__}: {exc}", "", event_id)
        return None

    async def _append(
        self,
        source: str,
        entry_id: str,
        event: CatalogEvent,
        meta: Metadata,
        *,
        idempotency_key: str,
        event_id: str,
        produced_at: str | None = None,
    ) -> None:
        command = command_for(event)
        # execute() answers a re-sent event from its idempotency record (before deciding, so
        # a re-sent ProductCreated is a duplicate, not "already exists"), re-reads state and
        # retries version conflicts a bounded number of times, like the API; what still
        # fails is a domain error (dead-lettered).
        result = await self._execute(
            self.store, command, meta, idempotency_key=idempotency_key, event_id=event_id
        )
        counter = "duplicates" if result.duplicate else "appended"
        await self.redis.hincrby(self.metrics_key(source), counter, 1)
        if result.duplicate:
            self.stats.duplicates += 1
            log.info("ingest_duplicate", source=source, entry_id=entry_id, event_id=event_id)
        else:
            self.stats.appended += 1
            log.info(
                "ingest_appended",
                source=source,
                entry_id=entry_id,
                event_id=event_id,
                type=type(event).__name__,
                position=result.position,
                produced_at=produced_at,
            )

    async def _legacy(self, source: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """The legacy feed: a snapshot becomes the events that reach it from the current state."""
        message = validate_legacy(fields, max_entry_bytes=self.max_entry_bytes)
        product_id = legacy_feed.product_id_for(message.produto.id)
        meta = Metadata(
            actor=f"ingest:{source}",
            correlation=str(uuid.uuid5(legacy_feed.LEGACY_NAMESPACE, f"{source}:{entry_id}")),
            source=f"ingest:{source}",
        )
        aggregate = f"product:{product_id}"
        current = current_product((await self.store.load([aggregate]))[aggregate])
        steps = legacy_feed.plan(message, current)
        if not steps:
            self.stats.unchanged += 1
            log.info("ingest_legacy_unchanged", source=source, entry_id=entry_id)
            return
        # One append per step, each with its own key: after a crash between two steps the
        # redelivered message is planned again from the new state, and a step that was
        # already recorded is a duplicate.
        for step, event in steps:
            key = f"ingest:{source}:{entry_id}:{step}"
            await self._append(
                source,
                entry_id,
                event,
                meta,
                idempotency_key=key,
                event_id=str(uuid.uuid5(legacy_feed.LEGACY_NAMESPACE, key)),
            )

    async def _dead_letter(
        self, source: str, entry_id: str, fields: dict[bytes, bytes], outcome: DeadLetter
    ) -> None:
        """Record the refusal, count it and acknowledge the entry in one MULTI: all or none.

        Same shape as the projectors' dead letters (:mod:`workers.dlq`): the original fields,
        byte for byte, plus ``dlq.*`` fields; re-publishing is ``XADD`` of the non-``dlq.*``
        fields. An oversized entry keeps only the start of each field.
        """
        truncated = entry_size(fields) > self.max_entry_bytes
        record: dict[bytes | str, bytes | str] = {
            k: (v[:_DLQ_VALUE_MAX_CHARS] if truncated else v) for k, v in fields.items()
        }
        record.update(
            {
                f"{META}kind": outcome.kind,
                f"{META}error": outcome.reason[:_DLQ_VALUE_MAX_CHARS],
                f"{META}field": outcome.field,
                f"{META}source": source,
                f"{META}stream": self.stream_of(source),
                f"{META}entry_id": entry_id,
                f"{META}event_id": outcome.event_id,
                f"{META}gateway": self.consumer,
                f"{META}at": now_at(),
                f"{META}truncated": "1" if truncated else "0",
            }
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.ingest_dlq(source), record)  # type: ignore[arg-type]
            pipe.xack(self.stream_of(source), self.group, entry_id)
            pipe.hincrby(self.metrics_key(source), "dead_letters", 1)
            await pipe.execute()
        self.stats.dead_lettered += 1
        log.warning(
            "ingest_dead_lettered",
            source=source,
            entry_id=entry_id,
            event_id=outcome.event_id,
            kind=outcome.kind,
            field=outcome.field,
            reason=outcome.reason[:500],
        )

    def metrics_key(self, source: str) -> str:
        """``{prefix}:metrics:ingest:{<stream>}``: ``appended``, ``duplicates``,
        ``dead_letters``; in the slot of the source's stream."""
        return self.keys.ingest_metrics(source)


# -- translation: events → catalog commands ----------------------------------------------


def command_for(event: CatalogEvent) -> Any:
    """The catalog command that records ``event`` through the API's write path."""
    from app.commands import catalog

    match event:
        case ProductCreated():
            return catalog.CreateProduct(
                product_id=event.product_id,
                sku=event.sku,
                name=event.name,
                description=event.description,
                category=event.category,
                price=event.price,
                currency=event.currency,
                stock=event.stock,
                legacy_id=event.legacy_id,
            )
        case ProductUpdated():
            return catalog.UpdateProduct(
                product_id=event.product_id,
                name=event.name,
                description=event.description,
                category=event.category,
                price=event.price,
                currency=event.currency,
            )
        case ProductDeleted():
            return catalog.DeleteProduct(product_id=event.product_id)
        case StockAdjusted():
            return catalog.AdjustStock(
                product_id=event.product_id, delta=event.delta, reason=event.reason
            )
    raise TypeError(f"not a catalog event: {type(event).__name__}")  # pragma: no cover


def current_product(state: AggregateState) -> legacy_feed.CurrentProduct | None:
    """The write side's product state as the legacy planner needs it (``None``: no product)."""
    if not isinstance(state, ProductState) or not state.exists:
        return None
    return legacy_feed.CurrentProduct(
        deleted=state.deleted,
        stock=state.stock,
        name=state.name,
        description=state.description,
        price=state.price,
    )
