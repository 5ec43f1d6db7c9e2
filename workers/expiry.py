"""The reservation expiry worker: finds unpaid orders whose reservation ran out and expires
them, exactly once, also across crashes and with several workers running.

It follows the log like a projector: each partition's ``OrderPlaced`` events go into that
partition's due-set (``{prefix}:expiry:{pN}``, score = ``reserved_until``) together with the
partition's checkpoint, in one ``MULTI`` on keys of the same hash tag (one slot on Redis
Cluster). The decision itself is the ``ExpireOrder`` command: an append that expects the
order's version and refuses any status but ``awaiting_payment``, so a duplicate (a crash
before the due entry was removed, a second worker, a racing payment) is refused and the
entry is then dropped. Nothing here decides; it only calls ``expire`` at the right time.

On a Redis Cluster it also follows the billing saga (:mod:`app.commands.saga`): each
``StockReserved`` goes into the product partition's ``{prefix}:expiry:{pN}:reservations``
(score = its deadline) and, once due, ``settle`` takes it (the order was billed) or
releases it (abandoned, or still unbilled at the deadline): no saga stays half done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from redis.asyncio.cluster import RedisCluster

from events.codec import RecordedEvent, decode_entry
from events.effects import SPLITTABLE, apply_effects, counter_effects, foreign
from events.errors import MalformedEvent
from events.keys import Keys
from events.store import EventStore
from events.types import OrderPlaced, StockReserved

log = structlog.get_logger("workers.expiry")

_FOLLOWED = {b"OrderPlaced", b"StockReserved", *(t.__name__.encode() for t in SPLITTABLE)}
"""Entry types the worker reads: due orders, saga reservations, cross-slot effects."""

Expire = Callable[[str, int], Awaitable[bool]]
"""``expire(order_id, at)``: True when this call expired the order, False when it was refused
(paid, cancelled or expired already)."""

Settle = Callable[[str, str, int, int], Awaitable[bool]]
"""``settle(order_id, product_id, quantity, at)``: finish or undo one saga reservation past
its deadline; False while its saga may still finish (the entry stays due)."""


class ExpiryWorker:
    def __init__(
        self,
        store: EventStore,
        expire: Expire,
        *,
        clock: Callable[[], float] = time.time,
        batch: int = 500,
        settle: Settle | None = None,
    ) -> None:
        self.store = store
        self.keys: Keys = store.keys
        self.expire = expire
        self.settle = settle
        self.clock = clock
        self.batch = batch
        self._stop = asyncio.Event()

    def due_key(self, partition: int) -> str:
        return f"{self.keys.prefix}:expiry:{{p{partition}}}"

    def reservations_key(self, partition: int) -> str:
        return f"{self.keys.prefix}:expiry:{{p{partition}}}:reservations"

    def checkpoint_key(self, partition: int) -> str:
        return f"{self.keys.prefix}:expiry:{{p{partition}}}:checkpoint"

    async def index(self) -> int:
        """Add every ``OrderPlaced`` (and saga ``StockReserved``) past each partition's
        checkpoint to its due-set; on a cluster, finish the cross-slot effects of the
        payments, expiries and cancellations on the way (before the checkpoint moves)."""
        added = 0
        redis = self.store.redis
        for p in range(self.keys.partitions):
            raw = await redis.get(self.checkpoint_key(p))
            after = raw.decode() if raw else "0-0"
            while True:
                rows = await self.store.read_raw(p, after, self.batch)
                if not rows:
                    break
                due: dict[str, int] = {}
                held: dict[str, int] = {}
                for entry_id, fields in rows:
                    if fields.get(b"type") not in _FOLLOWED:
                        continue
                    try:
                        recorded = decode_entry(entry_id, fields, p)
                    except MalformedEvent as exc:
                        # Never stall on one entry; the projections dead-letter it, and a
                        # payment of that order (if any) expires it lazily.
                        log.error("expiry_entry_undecodable", entry_id=entry_id, error=str(exc))
                        continue
                    event = recorded.event
                    if isinstance(event, OrderPlaced):
                        due[event.order_id] = event.reserved_until
                    elif isinstance(event, StockReserved):
                        member = [event.order_id, event.product_id, event.quantity]
                        held[msgspec.json.encode(member).decode()] = event.reserved_until
                    elif isinstance(redis, RedisCluster):
                        await self._finish_effects(recorded)
                after = rows[-1][0]
                async with redis.pipeline(transaction=True) as pipe:
                    if due:
                        pipe.zadd(self.due_key(p), due)
                    if held:
                        pipe.zadd(self.reservations_key(p), held)
                    pipe.set(self.checkpoint_key(p), after)
                    await pipe.execute()
                added += len(due)
                if len(rows) < self.batch:
                    break
        return added

    async def expire_due(self) -> int:
        """Expire the orders whose reservation has run out; returns how many this call expired."""
        now = int(self.clock())
        expired = 0
        redis = self.store.redis
        for p in range(self.keys.partitions):
            members = await redis.zrangebyscore(self.due_key(p), "-inf", now, 0, self.batch)
            for member in members:
                order_id = member.decode()
                if await self.expire(order_id, now):
                    expired += 1
                    log.info("order_expired", order_id=order_id)
                await redis.zrem(self.due_key(p), member)
            if self.settle is not None:
                expired += await self._settle_due(p, now)
        return expired

    async def _finish_effects(self, recorded: RecordedEvent) -> None:
        """Apply what a payment, expiry or cancellation does to its products in other
        slots, if the append's own call did not get to it (:mod:`events.effects`)."""
        effects = foreign(self.store, recorded.event, counter_effects(recorded.event))
        if effects and await apply_effects(self.store, recorded.id, effects):
            log.info("effects_finished", event_id=recorded.id, partitions=len(effects))

    async def _settle_due(self, partition: int, now: int) -> int:
        """Settle the saga reservations of one partition whose deadline passed."""
        redis = self.store.redis
        key = self.reservations_key(partition)
        settled = 0
        settle = self.settle
        if settle is None:
            return 0
        for member in await redis.zrangebyscore(key, "-inf", now, 0, self.batch):
            order_id, product_id, quantity = msgspec.json.decode(member)
            if await settle(order_id, product_id, int(quantity), now):
                settled += 1
                await redis.zrem(key, member)
        return settled

    async def run_once(self) -> int:
        await self.index()
        return await self.expire_due()

    async def run(self, interval: float = 1.0) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("expiry_round_failed")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()
