"""The read-models projection's bulk writer: applies the writes of the event handlers
(:mod:`projections.read_models.handlers`) to the ``accounts``, ``products``, ``orders``,
``carts`` and ``categories`` collections as idempotent, version-guarded bulk writes, with the
checkpoint.

Exactly once, without transactions:

* An event changes its own aggregate's document only where ``version < seq`` and sets
  ``version = seq``; an older or duplicate event matches nothing. Creation events upsert;
  when the document already holds that version the upsert hits the ``_id`` index
  (E11000), which means "already applied" and is skipped.
* An ``OrderBilled`` also changes other aggregates (the account's counters, each product's
  stock) that live in other partitions. Those writes are guarded by a per-source-partition
  watermark on the target document, ``applied.p<P>`` = the sortable entry id of the last
  event of partition ``P`` applied to it: a partition is delivered in log order (invariant
  6), so an entry at or below the watermark was applied already. This stays O(1) per
  document, where a set of applied order ids would grow with every sale of a product.
* Cross-aggregate writes commute (``$inc``, ``$max``) and create a stub (``version: 0``)
  when their target is not there yet, so partitions may be applied in any relative order
  (a rebuild replays them concurrently); the creation event then fills the stub in.

The checkpoint is written after the batch; replaying a batch is a no-op by the above.

A re-driven dead letter lies below the watermarks (later orders of its partition moved
them), so :meth:`ReadModelsProjection.redrive` guards its cross writes by a marker of the
event on the target document instead, removed once every write landed. An event that
fails alone records which of its writes had landed (``redrives``), so a re-drive applies
exactly the rest.

Every write waits for the journal (``j: true``, with ``w: "majority"``), the effects as much
as the checkpoint (``checkpoints``, one document per partition, written after them): an
acknowledged write must survive a crash of the server, because the runtime acknowledges
the log entries once ``apply`` returns and resumes from this checkpoint. Measured on
SecantusDB (``make run``'s server): ``kill -9`` loses up to a few dozen ``w: 1`` writes it
had acknowledged. Journaling only the checkpoint is not enough: the driver retries a write
cut by the crash on the restarted server, so a checkpoint can be durable in the new life of
the server while effects acknowledged in the old one are gone.
Should a server nonetheless give back a checkpoint older than one this process wrote (a
restored backup, a server that ignores ``j``), the write fails as :class:`SinkUnavailable`
and the runtime re-feeds from the older checkpoint.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pymongo import IndexModel, UpdateOne, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure
from redis.exceptions import RedisError

from events.codec import RecordedEvent
from events.personal import CLEAR, Opener, PersonalData
from projections.base import SinkUnavailable
from projections.read_models.documents import AccountView, OrderView, ProductView
from projections.read_models.folding import Cross, Fold, Own, Write, fold, mark
from projections.read_models.handlers import PERSONAL_EVENTS, writes_for

DUPLICATE_KEY = 11000

DURABLE = WriteConcern(w="majority", j=True)
"""The write concern of every write: acknowledged only once journaled (and, on a replica
set, on a majority, so a fail-over cannot roll it back). ``w: "majority"`` alone does not
imply the journal on every server (SecantusDB honours only ``j``), hence both. One write
per collection per group commit keeps the cost at a few journal flushes per batch."""


@dataclass(frozen=True, slots=True)
class Collections:
    """Collection names; a rebuild writes fresh (versioned) names and swaps them in."""

    accounts: str = "accounts"
    products: str = "products"
    orders: str = "orders"
    carts: str = "carts"
    categories: str = "categories"
    checkpoints: str = "checkpoints"
    meta: str = "meta"
    """The log this version was built from (:mod:`projections.identity`)."""
    redrives: str = "redrives"
    """Bookkeeping of dead letters (what a failed event left undone), not a view."""

    @classmethod
    def suffixed(cls, suffix: str) -> Collections:
        base = cls()
        return cls(
            accounts=f"{base.accounts}{suffix}",
            products=f"{base.products}{suffix}",
            orders=f"{base.orders}{suffix}",
            carts=f"{base.carts}{suffix}",
            categories=f"{base.categories}{suffix}",
            checkpoints=f"{base.checkpoints}{suffix}",
            meta=f"{base.meta}{suffix}",
            redrives=f"{base.redrives}{suffix}",
        )


async def bulk_apply(collection: AsyncCollection, ops: list[UpdateOne]) -> None:
    """Single guarded writes, in order. A duplicate-key error on an upsert says the document
    exists but the guard did not match: the write is tried once more (its insert may have
    raced with another upsert of the same stub) and, failing again, was applied already."""
    start, retried = 0, -1
    while start < len(ops):
        try:
            await collection.bulk_write(ops[start:], ordered=True)
            return
        except BulkWriteError as exc:
            index = start + _duplicate_at(exc)
            start, retried = (index + 1, -1) if index == retried else (index, index)


async def write_folds(collection: AsyncCollection, folds: list[Fold]) -> None:
    """One write per fold; the folds that missed are replayed as their single writes.

    A fold misses when its guard finds part of it applied (a replay split differently).
    An upsert or insert that misses says so with a duplicate-key error; a plain update
    only by matching nothing, seen in the counts, and then every plain fold is replayed
    (a no-op where it took effect).
    """
    ops = [f.op() for f in folds]
    missed: set[int] = set()
    took, start = 0, 0
    while start < len(ops):
        try:
            result = await collection.bulk_write(ops[start:], ordered=True)
        except BulkWriteError as exc:
            details = exc.details
            took += sum(int(details.get(n, 0)) for n in ("nMatched", "nUpserted", "nInserted"))
            index = start + _duplicate_at(exc)
            missed.add(index)
            start = index + 1
            continue
        took += result.matched_count + result.upserted_count + result.inserted_count
        break
    if took + len(missed) < len(ops):
        missed.update(i for i, f in enumerate(folds) if not f.upsert)
    singles = [w.op() for i in sorted(missed) for w in folds[i].writes]
    if singles:
        await bulk_apply(collection, singles)


def _duplicate_at(exc: BulkWriteError) -> int:
    """Index (in the failed bulk) of its first error, re-raising unless a duplicate key."""
    errors = exc.details.get("writeErrors") or []
    if not errors or errors[0].get("code") != DUPLICATE_KEY:
        raise exc
    return int(errors[0]["index"])


@dataclass(slots=True)
class _Batch:
    """One ``apply`` call waiting for its writes (see ``ReadModelsProjection.apply``)."""

    partition: int
    events: list[RecordedEvent]
    done: asyncio.Future[None]


class ReadModelsProjection:
    """Accounts, products, orders and carts in MongoDB (see the module docstring for idempotency)."""

    name = "read_models"
    version = 2
    """The documents and indexes this code writes; bump it with any change to them: a projector
    that starts against read models an older version built rebuilds them
    (``workers.rebuild.upgrade_view``)."""

    def __init__(
        self,
        db: AsyncDatabase,
        collections: Collections | None = None,
        personal: PersonalData | None = None,
    ) -> None:
        self.db = db
        self.collections = collections or Collections()
        self.personal = personal
        """Opens the accounts' sealed fields; without it only clear (legacy) text opens."""
        self._queue: list[_Batch] = []
        self._writing = asyncio.Lock()
        self._written: dict[int, str] = {}
        """Per partition, the mark of the last checkpoint this instance wrote durably."""

    def _collection(self, role: str) -> AsyncCollection:
        return self.db.get_collection(getattr(self.collections, role), write_concern=DURABLE)

    async def opener(self, events: Sequence[RecordedEvent]) -> Opener:
        """The keys of the accounts whose sealed fields ``events`` carry, in one lookup. A
        key store that does not answer is waited out like the sink."""
        subjects = {r.event.account_id for r in events if isinstance(r.event, PERSONAL_EVENTS)}
        if not subjects or self.personal is None:
            return CLEAR
        try:
            return await self.personal.opener(subjects)
        except RedisError as exc:
            raise SinkUnavailable(f"key store: {exc}") from exc

    async def setup(self) -> None:
        """Create the query indexes on the configured collection names (idempotent)."""
        specs: list[tuple[str, list[IndexModel]]] = [
            ("accounts", AccountView.Settings.indexes),
            ("products", ProductView.Settings.indexes),
            ("orders", OrderView.Settings.indexes),
        ]
        try:
            for role, indexes in specs:
                await self._collection(role).create_indexes(indexes)
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        """Apply one partition's batch, together with the batches other partitions hand in
        meanwhile (group commit): while one write is in flight the next batches queue, and
        the queue is then folded and written at once, so a product sold from eight
        partitions costs one update instead of eight."""
        if not events:
            return
        batch = _Batch(partition, list(events), asyncio.get_running_loop().create_future())
        self._queue.append(batch)
        try:
            async with self._writing:
                if not batch.done.done():
                    await asyncio.sleep(0)  # let batches handed in at the same time join
                    queued, self._queue = self._queue, []
                    await self._commit(queued, batch)
        except asyncio.CancelledError:
            if batch in self._queue:  # nobody wrote it yet, and nobody will wait for it
                self._queue.remove(batch)
            raise
        batch.done.result()

    async def _commit(self, queued: list[_Batch], mine: _Batch) -> None:
        """Write ``queued`` and settle each batch; a cancelled writer hands the batches it
        did not settle to the next one."""
        try:
            await self._settle(queued)
        except BaseException:
            self._queue[:0] = [b for b in queued if b is not mine and not b.done.done()]
            raise

    async def _settle(self, queued: list[_Batch]) -> None:
        """A failure that is not the store's (a write it rejects) is told apart per batch,
        so only the partition it came from retries and isolates it."""
        try:
            await self._write(queued)
        except SinkUnavailable as exc:
            for batch in queued:
                batch.done.set_exception(exc)
        except Exception:
            for batch in queued:
                try:
                    await self._write([batch])
                except Exception as exc:
                    if len(batch.events) == 1 and not isinstance(exc, SinkUnavailable):
                        await self._note_failure(batch.events[0])
                    batch.done.set_exception(exc)
                else:
                    batch.done.set_result(None)
        else:
            for batch in queued:
                batch.done.set_result(None)

    async def _write(self, batches: list[_Batch]) -> None:
        """Fold and write the batches' events past their partition's checkpoint (a batch
        re-delivered or already folded by a rebuild is skipped cheaply), then the
        checkpoints."""
        done = {p: mark(entry_id) for p, entry_id in (await self.checkpoints()).items()}
        self._check_not_behind(done, batches)
        fresh: dict[int, str] = {}
        writes: list[Write] = []
        opener = await self.opener([rec for batch in batches for rec in batch.events])
        for batch in batches:
            past = done.get(batch.partition, "")
            for rec in batch.events:
                if mark(rec.entry_id) > past:
                    writes.extend(writes_for(rec, opener))
                    last = fresh.get(batch.partition, rec.entry_id)
                    fresh[batch.partition] = max(last, rec.entry_id, key=mark)
        grouped = fold(writes)
        checkpoints = [
            UpdateOne(
                {"_id": partition, "mark": {"$not": {"$gte": mark(last)}}},
                {"$set": {"entry_id": last, "mark": mark(last)}},
                upsert=True,
            )
            for partition, last in fresh.items()
        ]
        if not checkpoints:
            return
        try:
            outcomes = await asyncio.gather(
                *(write_folds(self._collection(role), folds) for role, folds in grouped.items()),
                return_exceptions=True,
            )
            if failed := next((o for o in outcomes if isinstance(o, BaseException)), None):
                raise failed  # only once every collection's write has settled
            await bulk_apply(self._collection("checkpoints"), checkpoints)
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        for partition, last in fresh.items():
            self._written[partition] = max(self._written.get(partition, ""), mark(last))

    def _check_not_behind(self, done: dict[int, str], batches: list[_Batch]) -> None:
        """Refuse a batch that would build on a store that lost checkpoints it acknowledged.

        When the store's checkpoint of a partition is older than one this instance wrote,
        the effects written after it are gone too, and only a re-feed from the store's own
        checkpoint puts them back. A re-feed starts at or before what was written; any
        other batch of that partition (one that goes on from the consumer group) fails as
        :class:`SinkUnavailable`, on which the runtime re-feeds.
        """
        behind = {
            b.partition: (written, done.get(b.partition, ""))
            for b in batches
            if (written := self._written.get(b.partition, "")) > done.get(b.partition, "")
            and mark(b.events[0].entry_id) > written
        }
        if behind:
            detail = ", ".join(
                f"p{p}: {now or 'none'} < {was}" for p, (was, now) in sorted(behind.items())
            )
            raise SinkUnavailable(
                f"the store's checkpoints went back ({detail}): it lost acknowledged writes"
            )

    async def advance(self, partition: int, entry_id: str) -> None:
        """Move the checkpoint forward to ``entry_id`` (never back): the runtime calls it
        once every entry up to there is applied or parked."""
        checkpoint = UpdateOne(
            {"_id": partition, "mark": {"$not": {"$gte": mark(entry_id)}}},
            {"$set": {"entry_id": entry_id, "mark": mark(entry_id)}},
            upsert=True,
        )
        try:
            await bulk_apply(self._collection("checkpoints"), [checkpoint])
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc

    async def _landed(self, write: Write) -> bool:
        """Whether a guarded write's guard says it took effect (unguarded: never known)."""
        doc = await self._collection(write.role).find_one({"_id": write.doc_id})
        match write.guard:
            case Own(seq):
                return doc is not None and int(doc.get("version", 0)) >= seq
            case Cross() as cross:
                at = doc.get("applied", {}).get(f"p{cross.partition}", "") if doc else ""
                return str(at) >= cross.at
        return False

    async def _note_failure(self, rec: RecordedEvent) -> None:
        """Record which writes of an event that failed on its own had not landed.

        Exact now, and only now: its partition is applied in order and stops at it, so a
        watermark at or past the event means this event's own write took effect. The last
        failure before the runner dead-letters it is the one a re-drive reads.
        """
        try:
            opener = await self.opener([rec])
            missing = [
                [write.role, write.doc_id]
                for write in writes_for(rec, opener)
                if not await self._landed(write)
            ]
            await self._collection("redrives").replace_one(
                {"_id": rec.id}, {"_id": rec.id, "missing": missing}, upsert=True
            )
        except Exception as exc:  # the failure itself is what the runner must see
            structlog.get_logger("projections.read_models").warning(
                "redrive_note_failed", event_id=rec.id, error=f"{type(exc).__name__}: {exc}"
            )

    async def redrive(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        """Apply re-driven dead letters exactly once, in order, whatever the checkpoint
        and the watermarks say (see the module docstring)."""
        try:
            for rec in events:
                await self._redrive_one(rec)
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc

    async def _redrive_one(self, rec: RecordedEvent) -> None:
        """Which writes are due: those the failure note names as missing; without a note
        (a parked follower, an undecodable head, a version a rebuild folded) all of them,
        unless the event's own writes landed. Cross writes go first, own writes last, so
        an own write that landed says the whole re-drive did."""
        ledger = self._collection("redrives")
        note = await ledger.find_one({"_id": rec.id})
        marker = f"redriven:{rec.id}"
        writes = writes_for(rec, await self.opener([rec]))
        crossing = [w for w in writes if isinstance(w.guard, Cross)]
        owns = [w for w in writes if isinstance(w.guard, Own)]
        if note is not None and note.get("done"):
            writes = []
        elif note is not None:
            missing = {(role, doc_id) for role, doc_id in note.get("missing", [])}
            writes = [w for w in writes if (w.role, w.doc_id) in missing]
        elif owns and all([await self._landed(w) for w in owns]):
            writes = []
        for group in (
            [w for w in writes if not isinstance(w.guard, Own)],
            [w for w in writes if isinstance(w.guard, Own)],
        ):
            by_role: dict[str, list[UpdateOne]] = defaultdict(list)
            for write in group:
                if isinstance(write.guard, Cross):
                    update = {op: dict(fields) for op, fields in write.update.items()}
                    update.setdefault("$set", {})[marker] = True
                    update.setdefault("$max", {})[write.guard.field] = write.guard.at
                    update.setdefault("$setOnInsert", {})["version"] = 0
                    query = {"_id": write.doc_id, marker: {"$exists": False}}
                    by_role[write.role].append(UpdateOne(query, update, upsert=True))
                else:
                    by_role[write.role].append(write.op())
            for role, ops in by_role.items():
                await bulk_apply(self._collection(role), ops)
        if note is None or not note.get("done"):
            await ledger.update_one({"_id": rec.id}, {"$set": {"done": True}}, upsert=True)
        await self._unmark(crossing, marker)

    async def _unmark(self, writes: list[Write], marker: str) -> None:
        by_role: dict[str, list[UpdateOne]] = defaultdict(list)
        for write in writes:
            by_role[write.role].append(UpdateOne({"_id": write.doc_id}, {"$unset": {marker: ""}}))
        for role, ops in by_role.items():
            await self._collection(role).bulk_write(ops, ordered=False)

    async def checkpoint(self, partition: int) -> str | None:
        try:
            doc = await self.db[self.collections.checkpoints].find_one({"_id": partition})
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        return None if doc is None else str(doc["entry_id"])

    async def checkpoints(self) -> dict[int, str | None]:
        """Every partition's checkpoint at once (read-your-writes polls this)."""
        try:
            docs = await self.db[self.collections.checkpoints].find({}).to_list(None)
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        return {int(doc["_id"]): str(doc["entry_id"]) for doc in docs}
