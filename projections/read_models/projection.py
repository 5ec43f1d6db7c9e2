"""The read-models projection: folds the log into the ``accounts``, ``products`` and ``orders``
collections with idempotent, version-guarded bulk writes.

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
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure

from events.codec import RecordedEvent
from events.positions import parse_stream_id
from events.types import (
    AccountCreated,
    LoginSucceeded,
    OrderBilled,
    OrderCancelled,
    OrderDelivered,
    OrderExpired,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    PaymentDeclined,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    RefundIssued,
    StockAdjusted,
)
from projections.base import SinkUnavailable
from projections.read_models.documents import AccountView, OrderView, ProductView
from projections.read_models.folding import Cross, Fold, Own, Update, Write, fold
from projections.read_models.lifecycle import (
    on_order_cancelled,
    on_order_delivered,
    on_order_expired,
    on_order_paid,
    on_order_placed,
    on_order_shipped,
    on_payment_declined,
    on_refund_issued,
)

DUPLICATE_KEY = 11000


@dataclass(frozen=True, slots=True)
class Collections:
    """Collection names; a rebuild writes fresh (versioned) names and swaps them in."""

    accounts: str = "accounts"
    products: str = "products"
    orders: str = "orders"
    checkpoints: str = "checkpoints"

    @classmethod
    def suffixed(cls, suffix: str) -> Collections:
        base = cls()
        return cls(
            accounts=f"{base.accounts}{suffix}",
            products=f"{base.products}{suffix}",
            orders=f"{base.orders}{suffix}",
            checkpoints=f"{base.checkpoints}{suffix}",
        )


def mark(entry_id: str) -> str:
    """A stream entry id as a string that sorts like the id (for ``$gte`` watermarks)."""
    ms, seq = parse_stream_id(entry_id)
    return f"{ms:016d}-{seq:012d}"


def _own(role: str, aggregate_id: str, seq: int, update: Update, *, upsert: bool = False) -> Write:
    return Write(role, aggregate_id, update, Own(seq), upsert=upsert)


def _cross(role: str, target_id: str, rec: RecordedEvent, update: Update) -> Write:
    return Write(role, target_id, update, Cross(rec.partition, mark(rec.entry_id)), upsert=True)


def on_account_created(rec: RecordedEvent, e: AccountCreated) -> list[Write]:
    fields = {"email": e.email, "name": e.name, "role": e.role, "created_at": rec.at}
    update = {"$set": fields, "$setOnInsert": {"orders_count": 0, "total_spent": 0}}
    return [_own("accounts", e.account_id, rec.seq, update, upsert=True)]


def on_login_succeeded(rec: RecordedEvent, e: LoginSucceeded) -> list[Write]:
    # A stub carries the counters AccountCreated would set on insert, so the document is
    # the same whichever partition a replay applies first.
    stub = {"version": 0, "orders_count": 0, "total_spent": 0}
    update = {"$max": {"last_login_at": rec.at}, "$setOnInsert": stub}
    return [Write("accounts", e.account_id, update, upsert=True)]


def on_product_created(rec: RecordedEvent, e: ProductCreated) -> list[Write]:
    fields = {
        "sku": e.sku,
        "name": e.name,
        "name_key": e.name.casefold(),
        "description": e.description,
        "category": e.category,
        "price": e.price,
        "currency": e.currency,
        "deleted": False,
        "created_at": rec.at,
        "updated_at": rec.at,
    }
    # Opening stock is added, not set: sales from other partitions may already be counted.
    update = {"$set": fields, "$inc": {"stock": e.stock}}
    return [_own("products", e.product_id, rec.seq, update, upsert=True)]


def on_product_updated(rec: RecordedEvent, e: ProductUpdated) -> list[Write]:
    fields: dict[str, Any] = {"updated_at": rec.at}
    for name in ("name", "description", "category", "price", "currency"):
        value = getattr(e, name)
        if value is not None:
            fields[name] = value
    if e.name is not None:
        fields["name_key"] = e.name.casefold()
    return [_own("products", e.product_id, rec.seq, {"$set": fields})]


def on_product_deleted(rec: RecordedEvent, e: ProductDeleted) -> list[Write]:
    update = {"$set": {"deleted": True, "updated_at": rec.at}}
    return [_own("products", e.product_id, rec.seq, update)]


def on_stock_adjusted(rec: RecordedEvent, e: StockAdjusted) -> list[Write]:
    update = {"$inc": {"stock": e.delta}, "$set": {"updated_at": rec.at}}
    return [_own("products", e.product_id, rec.seq, update)]


def on_order_billed(rec: RecordedEvent, e: OrderBilled) -> list[Write]:
    doc = {
        "account_id": e.account_id,
        "lines": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "line_total": line.line_total,
            }
            for line in e.lines
        ],
        "total": e.total,
        "currency": e.currency,
        "billed_at": rec.at,
    }
    # Only this event writes an order document: it can be inserted rather than upserted.
    order = Write("orders", e.order_id, {"$set": doc}, Own(rec.seq), upsert=True, sole_writer=True)
    account = {"$inc": {"orders_count": 1, "total_spent": e.total}}
    writes: list[Write] = [order, _cross("accounts", e.account_id, rec, account)]
    sold: dict[str, int] = defaultdict(int)
    for line in e.lines:
        sold[line.product_id] += line.quantity
    for product_id, quantity in sold.items():
        writes.append(_cross("products", product_id, rec, {"$inc": {"stock": -quantity}}))
    return writes


def writes_for(rec: RecordedEvent) -> list[Write]:
    """The route table: event type → its writes. Types not listed change no read model."""
    match rec.event:
        case AccountCreated() as e:
            return on_account_created(rec, e)
        case LoginSucceeded() as e:
            return on_login_succeeded(rec, e)
        case ProductCreated() as e:
            return on_product_created(rec, e)
        case ProductUpdated() as e:
            return on_product_updated(rec, e)
        case ProductDeleted() as e:
            return on_product_deleted(rec, e)
        case StockAdjusted() as e:
            return on_stock_adjusted(rec, e)
        case OrderBilled() as e:
            return on_order_billed(rec, e)
        case OrderPlaced() as e:
            return on_order_placed(rec, e)
        case PaymentDeclined() as e:
            return on_payment_declined(rec, e)
        case OrderPaid() as e:
            return on_order_paid(rec, e)
        case OrderExpired() as e:
            return on_order_expired(rec, e)
        case OrderCancelled() as e:
            return on_order_cancelled(rec, e)
        case RefundIssued() as e:
            return on_refund_issued(rec, e)
        case OrderShipped() as e:
            return on_order_shipped(rec, e)
        case OrderDelivered() as e:
            return on_order_delivered(rec, e)
        case _:
            return []


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
    """Accounts, products and orders in MongoDB (see the module docstring for idempotency)."""

    name = "read_models"

    def __init__(self, db: AsyncDatabase, collections: Collections | None = None) -> None:
        self.db = db
        self.collections = collections or Collections()
        self._queue: list[_Batch] = []
        self._writing = asyncio.Lock()

    def _collection(self, role: str) -> AsyncCollection:
        return self.db[getattr(self.collections, role)]

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
        fresh: dict[int, str] = {}
        writes: list[Write] = []
        for batch in batches:
            past = done.get(batch.partition, "")
            for rec in batch.events:
                if mark(rec.entry_id) > past:
                    writes.extend(writes_for(rec))
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
            await bulk_apply(self.db[self.collections.checkpoints], checkpoints)
        except ConnectionFailure as exc:
            raise SinkUnavailable(str(exc)) from exc

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
