"""The read-models projection's bulk writer: applies the writes of the event handlers
(:mod:`projections.read_models.handlers`) to the ``accounts``, ``products``, ``orders``,
``carts`` and ``categories`` collections as idempotent, version-guarded bulk writes, with the
checkpoint.

Exactly once, with or without transactions:

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

A batch is written at once where it can be: its folds and checkpoints in one transaction,
new documents as inserts, made durable by one journaled write that finds the commit's
token on the checkpoints (``ReadModelsProjection._write_at_once``). Otherwise (a fold that
meets a partly applied document, a duplicate, a conflict) it is written by parts, the
checkpoints after the effects; replaying a batch is a no-op either way, by the above.
A writer's transactions run in one server session it records (``sessions``); whoever
writes a partition next kills the other recorded sessions first, so the transaction a
killed writer left open (holding the checkpoints) ends at once instead of stalling the
view until the server reaps it (``ReadModelsProjection._end_others``).

A re-driven dead letter lies below the watermarks (later orders of its partition moved
them), so :meth:`ReadModelsProjection.redrive` guards its cross writes by a marker of the
event on the target document instead, removed once every write landed. An event that
fails alone records which of its writes had landed (``redrives``), so a re-drive applies
exactly the rest.

Written by parts, every write waits for the journal (``j: true``, with ``w: "majority"``), the
effects as much as the checkpoint (``checkpoints``, one document per partition, written
after them): an
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
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from pymongo import IndexModel, UpdateOne, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError
from pymongo.results import BulkWriteResult
from redis.exceptions import RedisError

from events.codec import RecordedEvent
from events.personal import CLEAR, Opener, PersonalData
from projections.base import SinkUnavailable
from projections.read_models.documents import (
    RETIRED_INDEXES,
    AccountView,
    OrderView,
    ProductView,
)
from projections.read_models.folding import Cross, Fold, Own, Write, fold, mark
from projections.read_models.handlers import PERSONAL_EVENTS, writes_for

DUPLICATE_KEY = 11000
INDEX_NOT_FOUND = 27
PRESENT_MAX = 200_000
"""Documents remembered as existing, per role, before the memory starts over."""
SESSION_REFRESH_S = 600.0
"""How often a writer renews the record of its session (see ``_own_session``)."""
SESSION_STALE_S = 86_400.0
"""A session record this old is a dead writer's: killed, then forgotten."""

DURABLE = WriteConcern(w="majority", j=True)
"""The write concern of every write: acknowledged only once journaled (and, on a replica
set, on a majority, so a fail-over cannot roll it back). ``w: "majority"`` alone does not
imply the journal on every server (SecantusDB honours only ``j``), hence both. One write
per collection per group commit keeps the cost at a few journal flushes per batch."""
JOIN_MAX_S = 0.03
"""The longest a write waits for the partitions of the last one (``_join_partners``)."""
JOIN_SHARE = 0.25
"""The share of the last write's time that the next one waits for them, up to the above."""


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
    sessions: str = "sessions"
    """The server sessions this view's writers run their transactions in, so that a
    successor can end the open transaction of one that died (see ``_end_others``)."""

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
            sessions=f"{base.sessions}{suffix}",
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


class _Missed(Exception):
    """Internal: a write of the transaction did not apply whole (see ``_write_at_once``)."""


def _took(result: BulkWriteResult) -> int:
    return result.matched_count + result.upserted_count + result.inserted_count


def _checkpoint(partition: int, entry_id: str, token: str | None = None) -> UpdateOne:
    """Move ``partition``'s checkpoint to ``entry_id``, never back (``token``: see
    ``ReadModelsProjection._write_at_once``)."""
    fields: dict[str, str] = {"entry_id": entry_id, "mark": mark(entry_id)}
    if token is not None:
        fields["commit"] = token
    return UpdateOne(
        {"_id": partition, "mark": {"$not": {"$gte": mark(entry_id)}}},
        {"$set": fields},
        upsert=True,
    )


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
        self._handed_in = asyncio.Event()
        """Set when a batch joins ``_queue`` (see :meth:`_join_partners`)."""
        self._writing = asyncio.Lock()
        self._last_write: tuple[frozenset[int], float] = (frozenset(), 0.0)
        """The partitions of the last write and the seconds it took."""
        self._written: dict[int, str] = {}
        """Per partition, the mark of the last checkpoint this instance wrote durably."""
        self._present: dict[str, set[str]] = defaultdict(set)
        """Per role, documents known to exist (read models never delete one): their folds
        are updates without asking the store first (see :meth:`_missing`)."""
        self._session: AsyncClientSession | None = None
        """The one server session of this instance's transactions (they are serialised by
        ``_writing``), recorded in ``sessions`` before its first transaction."""
        self._recorded_at = 0.0
        self._fenced: set[int] = set()
        """Partitions for which the transactions other sessions left open were ended."""
        self._fence: asyncio.Future[None] | None = None

    async def close(self) -> None:
        """End this instance's session and drop its record (a clean stop leaves no open
        transaction: nobody needs to end it)."""
        session, self._session = self._session, None
        if session is None:
            return
        with contextlib.suppress(PyMongoError):
            await self._collection("sessions").delete_one({"_id": session.session_id["id"]})
        with contextlib.suppress(PyMongoError):
            await session.end_session()

    async def _own_session(self) -> AsyncClientSession:
        """This instance's session, recorded (``j: true``) before any transaction runs in
        it, and its record refreshed every :data:`SESSION_REFRESH_S` so that it is never
        taken for a dead one's (see :meth:`_end_others`)."""
        if self._session is None:
            self._session = self.db.client.start_session()
            self._recorded_at = 0.0
        now = time.monotonic()
        if now - self._recorded_at > SESSION_REFRESH_S or not self._recorded_at:
            await self._collection("sessions").update_one(
                {"_id": self._session.session_id["id"]},
                {"$set": {"at": datetime.now(UTC)}},
                upsert=True,
            )
            self._recorded_at = now
        return self._session

    async def _end_others(self, partitions: Iterable[int]) -> None:
        """End the transactions that the other recorded sessions hold open, before this
        instance first writes for a partition.

        A writer killed in the middle of a transaction (``kill -9`` of the projector)
        leaves it open on the server, holding every document it wrote, the checkpoints
        included: each later write to them waits on a write conflict until the server
        reaps the transaction (MongoDB after ``transactionLifetimeLimitSeconds``, 60 s;
        SecantusDB only when a transaction command happens to run, measured ~155 s), so
        the view would stall that long. Whoever writes a partition next took it over
        (a restart, or a peer whose lease it was), so it kills the other sessions first
        (``killSessions``): the dead one's transaction aborts, nothing of it applied. A
        live peer's session may be among them; its transaction in flight then aborts and
        that batch goes by parts, which is safe (the guards) and rare (once per partition
        an instance takes). Records older than :data:`SESSION_STALE_S` are dropped: they
        are killed here and a live session refreshes its record long before.
        """
        new = set(partitions) - self._fenced
        if not new:
            return
        if self._fence is None or self._fence.done():
            self._fence = asyncio.ensure_future(self._kill_others())
        # One fence for all who arrive while it runs: partitions handed in together still
        # go on together, into one group commit; shielded, so that a cancelled caller does
        # not cancel it for the others.
        await asyncio.shield(self._fence)
        self._fenced |= new

    async def _kill_others(self) -> None:
        try:
            mine = (await self._own_session()).session_id["id"]
            sessions = self._collection("sessions")
            others = await sessions.find({"_id": {"$ne": mine}}).to_list(None)
            if others:
                await self.db.client.admin.command(
                    "killSessions", [{"id": doc["_id"]} for doc in others]
                )
                structlog.get_logger("projections.read_models").info(
                    "sessions_ended", sessions=len(others), collection=sessions.name
                )
                stale = datetime.now(UTC) - timedelta(seconds=SESSION_STALE_S)
                await sessions.delete_many(
                    {"_id": {"$in": [doc["_id"] for doc in others]}, "at": {"$lt": stale}}
                )
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        except OperationFailure as exc:  # a server without killSessions: write anyway
            structlog.get_logger("projections.read_models").warning(
                "sessions_not_ended", error=str(exc)
            )

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
        """Create the query indexes on the configured collection names and drop the retired
        ones (both idempotent)."""
        specs: list[tuple[str, list[IndexModel]]] = [
            ("accounts", AccountView.Settings.indexes),
            ("products", ProductView.Settings.indexes),
            ("orders", OrderView.Settings.indexes),
        ]
        try:
            for role, indexes in specs:
                collection = self._collection(role)
                if indexes:
                    await collection.create_indexes(indexes)
                retired = set(RETIRED_INDEXES.get(role, ()))
                for name in retired & set(await collection.index_information()):
                    try:
                        await collection.drop_index(name)
                    except OperationFailure as exc:
                        if exc.code != INDEX_NOT_FOUND:  # another projector dropped it first
                            raise
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        """Apply one partition's batch, together with the batches other partitions hand in
        meanwhile (group commit): while one write is in flight the next batches queue, and
        the queue is then folded and written at once, so a product sold from eight
        partitions costs one update instead of eight."""
        if not events:
            return
        await self._end_others([partition])  # not behind ``_writing``: see _end_others
        batch = _Batch(partition, list(events), asyncio.get_running_loop().create_future())
        self._queue.append(batch)
        self._handed_in.set()
        try:
            async with self._writing:
                if not batch.done.done():
                    await self._join_partners()
                    queued, self._queue = self._queue, []
                    started = time.monotonic()
                    try:
                        await self._commit(queued, batch)
                    finally:
                        partitions = frozenset(b.partition for b in queued)
                        self._last_write = (partitions, time.monotonic() - started)
        except asyncio.CancelledError:
            if batch in self._queue:  # nobody wrote it yet, and nobody will wait for it
                self._queue.remove(batch)
            raise
        batch.done.result()

    async def _join_partners(self) -> None:
        """Wait, briefly, for the partitions of the last write to hand in their next batch.

        Each write pays for every product it touches, whatever the number of events that
        touch it. Without waiting, the first partition back from the last write (acked, its
        next batch read) wrote alone while the others queued behind it: under load the
        writes alternated between one partition and the other seven, and the one-partition
        write cost half of the seven's. The wait is a share of the last write's time, at most
        :data:`JOIN_MAX_S`, so a quiet projector (quick writes) barely waits.
        """
        await asyncio.sleep(0)  # batches handed in at the same time join in any case
        partners, took = self._last_write
        deadline = time.monotonic() + min(JOIN_MAX_S, took * JOIN_SHARE)
        while not partners <= {b.partition for b in self._queue}:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._handed_in.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._handed_in.wait(), left)

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
        if not fresh:
            return
        try:
            if not await self._write_at_once(grouped, fresh):
                await self._write_by_parts(grouped, fresh)
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc
        for partition, last in fresh.items():
            self._written[partition] = max(self._written.get(partition, ""), mark(last))

    async def _write_by_parts(self, grouped: dict[str, list[Fold]], fresh: dict[int, str]) -> None:
        """Each collection's folds as one bulk write (a fold that misses replayed write by
        write), then the checkpoints: every write journaled on its own."""
        outcomes = await asyncio.gather(
            *(write_folds(self._collection(role), folds) for role, folds in grouped.items()),
            return_exceptions=True,
        )
        if failed := next((o for o in outcomes if isinstance(o, BaseException)), None):
            raise failed  # only once every collection's write has settled
        await bulk_apply(
            self._collection("checkpoints"), [_checkpoint(p, last) for p, last in fresh.items()]
        )

    async def _write_at_once(self, grouped: dict[str, list[Fold]], fresh: dict[int, str]) -> bool:
        """The batch's folds and checkpoints in one transaction, journaled once; ``False``
        (nothing written) when it must go by parts instead.

        The common case: every fold applies whole (nothing of it was applied before) and
        every checkpoint moves, which the counts of the writes show. Anything else (a fold
        that meets a partly applied document, a duplicate key, a rejected write, a conflict
        with another process) aborts the transaction and :meth:`_write_by_parts` settles it
        write by write. A fold that creates a document known to be absent is an insert.

        SecantusDB commits a user transaction without syncing its journal (only a single
        write with ``j: true`` syncs, and the sync covers every commit before it), so the
        checkpoints carry a token and a journaled write that must find the token on every
        one of them follows the commit: only when it does are the batch's effects and
        checkpoints durable, and a server that lost the transaction (killed before the
        sync) matches fewer and fails as :class:`SinkUnavailable`.
        """
        missing = await self._missing(grouped)
        token = uuid.uuid4().hex
        session = await self._own_session()
        try:
            async with await session.start_transaction(write_concern=DURABLE):
                for role, folds in grouped.items():
                    absent = missing.get(role, set())
                    ops = [f.op(f.doc_id in absent) for f in folds]
                    result = await self._collection(role).bulk_write(
                        ops, ordered=True, session=session
                    )
                    if _took(result) < len(ops):
                        raise _Missed(role)
                stamps = [_checkpoint(p, last, token) for p, last in fresh.items()]
                result = await self._collection("checkpoints").bulk_write(
                    stamps, ordered=True, session=session
                )
                if _took(result) < len(stamps):
                    raise _Missed("checkpoints")
        except (_Missed, OperationFailure):
            # A write the store refused (a duplicate key, a rejected update), a conflict, a
            # commit it does not know (a restart): nothing of the transaction applied, or,
            # for a commit whose outcome is unknown, all of it, which the guards then skip.
            return False
        for role, folds in grouped.items():  # each document is there now
            self._present[role].update(f.doc_id for f in folds)
        synced = await self._collection("checkpoints").update_many(
            {"_id": {"$in": list(fresh)}, "commit": token}, {"$unset": {"commit": ""}}
        )
        if synced.matched_count != len(fresh):
            raise SinkUnavailable(
                f"the store lost a committed batch ({synced.matched_count} of {len(fresh)}"
                " checkpoints found after the commit)"
            )
        return True

    async def _missing(self, grouped: dict[str, list[Fold]]) -> dict[str, set[str]]:
        """Per role, the documents that a fold would create and that are not there (one
        query per collection); a document with several folds is left to the updates."""
        missing: dict[str, set[str]] = {}
        for role, folds in grouped.items():
            count: dict[str, int] = defaultdict(int)
            for f in folds:
                count[f.doc_id] += 1
            present = self._present[role]
            wanted = [
                f.doc_id
                for f in folds
                if f.creates and not f.insert and count[f.doc_id] == 1 and f.doc_id not in present
            ]
            if not wanted:
                continue
            found = (
                await self._collection(role)
                .find({"_id": {"$in": wanted}}, {"_id": 1})
                .to_list(None)
            )
            there = {d["_id"] for d in found}
            missing[role] = set(wanted) - there
            if len(present) > PRESENT_MAX:
                present.clear()
            present.update(there)
        return missing

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
        await self._end_others([partition])
        try:
            await bulk_apply(self._collection("checkpoints"), [_checkpoint(partition, entry_id)])
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
        await self._end_others([partition])
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
