"""The read models' rebuild path: fold the replayed log in memory, insert the final documents.

A rebuild writes into a fresh version nobody reads or writes but the rebuild itself, so the
documents need not be built write by write on the server (a guarded update costs SecantusDB
~1-2 ms of Python per statement, an insert ~0.2 ms). :class:`BulkFold` wraps the version's
:class:`~projections.read_models.projection.ReadModelsProjection` for the rebuild's replay:

* ``apply`` computes the batch's writes with the very handlers of the live path
  (:func:`~projections.read_models.handlers.writes_for`, the same key store lookup) and
  applies them, guards included, to documents held in memory (:class:`Documents`, which does
  what the server does with the update operators the handlers use). A batch applies whole or
  not at all, so the replay's isolation of a failing entry (one by one, in order; abort or
  park) works as on the live path, and the in-memory checkpoints skip re-applied entries.
* :meth:`BulkFold.flush` (the rebuild calls it after its catch-up, before pausing the live
  projector for the switch) inserts every document once, unordered, in chunks written
  concurrently, journaled as every read-model write (``DURABLE``), then the checkpoints
  (after the documents, as on the live path), then builds the query indexes (a load then
  an index build is faster than inserting into indexed collections). A flush cut by a sink
  error is retried by inserting again: a document inserted already is the same final
  document (duplicate keys are ignored), and creating an index is idempotent.
* From the flush on, ``apply`` is the projection's own (guarded bulk writes on the inserted
  documents): the entries replayed under the pause and anything after.

Whatever the memory cannot do exactly as the server would (an operator the handlers do not
use today, a type the comparison rules below do not cover, a conflicting path) raises
:class:`Unsupported`: the batch is undone in memory, what was folded so far is flushed (it is
exact), and that batch and every later one take the live path. So the result is the same
documents the live path builds, only written as inserts.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, ConnectionFailure

from events.codec import RecordedEvent
from projections.base import SinkUnavailable
from projections.read_models.folding import Write, mark
from projections.read_models.handlers import writes_for
from projections.read_models.projection import (
    DUPLICATE_KEY,
    ReadModelsProjection,
    bulk_apply,
)

log = structlog.get_logger("projections.read_models")

CHUNK = 1000
"""Documents per ``insert_many`` of a flush."""
WRITERS = 8
"""Chunks of a flush in flight at once."""


class Unsupported(Exception):
    """A write the in-memory fold cannot apply exactly as the server would."""


_MISSING = object()


def _comparable(a: Any, b: Any) -> bool:
    """Values the memory compares as the server does: both numbers (not bools), both
    strings or both datetimes."""
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if isinstance(a, int | float) and isinstance(b, int | float):
        return True
    if isinstance(a, str) and isinstance(b, str):
        return True
    return isinstance(a, datetime) and isinstance(b, datetime)


def _get(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict):
            if isinstance(value, list):
                raise Unsupported(f"path {path} crosses an array")
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _parent(doc: dict[str, Any], path: str, create: bool) -> tuple[dict[str, Any] | None, str]:
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        child = node.get(part, _MISSING)
        if child is _MISSING:
            if not create:
                return None, parts[-1]
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise Unsupported(f"path {path} crosses a non-document")
        node = child
    return node, parts[-1]


def _condition(doc: dict[str, Any], path: str, condition: Any) -> bool:
    """Whether ``doc`` matches ``{path: condition}`` for the guards the handlers write
    (``$lt``, ``$not: {$gte}``); anything else is :class:`Unsupported`."""
    if not isinstance(condition, dict) or len(condition) != 1:
        raise Unsupported(f"condition on {path}")
    ((op, operand),) = condition.items()
    if op == "$not":
        return not _condition(doc, path, operand)
    if op not in ("$lt", "$gte"):
        raise Unsupported(f"operator {op} on {path}")
    value = _get(doc, path)
    if value is _MISSING:
        return False
    if not _comparable(value, operand):
        raise Unsupported(f"{op} on {path} across types")
    return bool(value < operand) if op == "$lt" else bool(value >= operand)


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    return all(_condition(doc, path, c) for path, c in query.items() if path != "_id")


def _check_paths(update: dict[str, dict[str, Any]]) -> None:
    """The server refuses an update whose paths repeat or nest in one another."""
    paths = [path for fields in update.values() for path in fields]
    taken = set(paths)
    if len(taken) != len(paths) or "_id" in taken:
        raise Unsupported("an update touches a path twice, or _id")
    for path in paths:
        if "." not in path:
            continue
        parts = path.split(".")
        if not all(parts) or any(".".join(parts[:n]) in taken for n in range(1, len(parts))):
            raise Unsupported(f"conflicting paths at {path}")


def _update(doc: dict[str, Any], update: dict[str, dict[str, Any]], inserting: bool) -> None:
    """Apply ``update`` to ``doc`` in place, as the server does (``inserting``: an upsert's
    insert, where ``$setOnInsert`` applies too)."""
    _check_paths(update)
    for op, fields in update.items():
        if op == "$setOnInsert":
            if not inserting:
                continue
            op = "$set"
        for path, value in fields.items():
            if op == "$set":
                parent, name = _parent(doc, path, create=True)
                assert parent is not None
                parent[name] = value
            elif op == "$unset":
                parent, name = _parent(doc, path, create=False)
                if parent is not None:
                    parent.pop(name, None)
            elif op == "$inc":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise Unsupported(f"$inc of {type(value).__name__}")
                parent, name = _parent(doc, path, create=True)
                assert parent is not None
                now = parent.get(name, _MISSING)
                if now is _MISSING:
                    parent[name] = value
                elif isinstance(now, int) and not isinstance(now, bool):
                    total = now + value
                    if not -(2**63) <= total < 2**63:
                        raise Unsupported("$inc overflows")
                    parent[name] = total
                else:
                    raise Unsupported(f"$inc on {type(now).__name__}")
            elif op == "$max":
                parent, name = _parent(doc, path, create=True)
                assert parent is not None
                now = parent.get(name, _MISSING)
                if now is _MISSING:
                    parent[name] = value
                elif not _comparable(now, value):
                    raise Unsupported(f"$max across types at {path}")
                elif value > now:
                    parent[name] = value
            else:
                raise Unsupported(f"operator {op}")


_IMMUTABLE = (str, int, float, bool, datetime, bytes, type(None))


def _clone(value: Any) -> Any:
    """A copy of a document deep enough to undo writes to it: dicts and lists are copied,
    immutable leaves shared. ``copy.deepcopy`` did the same at several times the cost (its
    memo, and a reduce round trip per datetime), and a batch saves every document it touches
    once."""
    if type(value) is dict:
        return {k: v if type(v) in _IMMUTABLE else _clone(v) for k, v in value.items()}
    if type(value) is list:
        return [v if type(v) in _IMMUTABLE else _clone(v) for v in value]
    if isinstance(value, _IMMUTABLE):
        return value
    return copy.deepcopy(value)


class Documents:
    """The read models' documents in memory, per role, written as the server would."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}
        self.checkpoints: dict[int, str] = {}
        """Partition → the last entry id folded."""
        self._undo: dict[tuple[str, str], dict[str, Any] | None] | None = None

    def _save(self, role: str, doc_id: str) -> None:
        if self._undo is not None and (role, doc_id) not in self._undo:
            doc = self.docs.get(role, {}).get(doc_id)
            self._undo[(role, doc_id)] = None if doc is None else _clone(doc)

    def write(self, write: Write) -> None:
        """One guarded write (:meth:`Write.guarded`), as one ``UpdateOne`` of the live path
        (``bulk_apply``: an upsert whose guard fails on an existing document is a
        duplicate key, i.e. already applied)."""
        query, update = write.guarded()
        if query.get("_id") != write.doc_id:
            raise Unsupported("a write not by _id")
        docs = self.docs.setdefault(write.role, {})
        doc = docs.get(write.doc_id)
        if doc is not None:
            if _matches(doc, query):
                self._save(write.role, write.doc_id)
                _update(doc, update, inserting=False)
            return
        if not write.upsert:
            return
        self._save(write.role, write.doc_id)
        fresh: dict[str, Any] = {"_id": write.doc_id}
        if not all(isinstance(c, dict) for path, c in query.items() if path != "_id"):
            raise Unsupported("equality in an upsert's query")
        _update(fresh, update, inserting=True)
        docs[write.doc_id] = fresh

    def apply(self, partition: int, writes: list[tuple[str, list[Write]]]) -> None:
        """Apply one batch's writes (entry id, its writes) whole or not at all."""
        self._undo = {}
        try:
            for _, event_writes in writes:
                for write in event_writes:
                    self.write(write)
        except BaseException:
            for (role, doc_id), doc in self._undo.items():
                if doc is None:
                    self.docs.get(role, {}).pop(doc_id, None)
                else:
                    self.docs[role][doc_id] = doc
            raise
        finally:
            self._undo = None
        if writes:
            last = max((entry_id for entry_id, _ in writes), key=mark)
            if mark(last) > mark(self.checkpoints.get(partition, "0-0")):
                self.checkpoints[partition] = last


FOLD_CHUNK = 100
"""Events folded in memory per step. Folding is this process's CPU with no I/O, so a batch
folded in one step holds the event loop: eight partitions' batches of 2 000 held it for
seconds, long enough for the rebuild's lock and pause keep-alive to miss their TTL. Each
chunk is applied whole and moves the partition's checkpoint, so a batch cut into chunks
folds exactly as it would whole."""


class BulkFold:
    """A read-models version being rebuilt (see the module docstring)."""

    def __init__(self, projection: ReadModelsProjection) -> None:
        self.projection = projection
        self.name = projection.name
        self.version = projection.version
        self._memory: Documents | None = Documents()
        self._pending: Documents | None = None
        """Folded documents taken out of memory and not yet written whole."""
        self._flushing = asyncio.Lock()

    @property
    def collections(self) -> Any:
        return self.projection.collections

    @property
    def db(self) -> Any:
        return self.projection.db

    @property
    def folding(self) -> bool:
        """Whether batches still go to memory (before the flush)."""
        return self._memory is not None

    async def setup(self) -> None:
        """Nothing yet: the version's query indexes are built by :meth:`flush`, after its
        inserts. Nobody queries a version before it is switched to, and SecantusDB inserts
        20 000 orders into an indexed collection in 3.0 s, against 1.3 s unindexed plus
        0.6 s to build the index afterwards (measured on this machine)."""

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        for start in range(0, len(events), FOLD_CHUNK):
            if start:
                await asyncio.sleep(0)  # the loop runs between chunks (see FOLD_CHUNK)
            if not await self._fold(partition, events[start : start + FOLD_CHUNK]):
                await self.flush()  # a flush in progress (or cut by a sink error) finishes
                await self.projection.apply(partition, events[start:])
                return

    async def _fold(self, partition: int, events: Sequence[RecordedEvent]) -> bool:
        """Fold ``events`` into memory, whole; ``False`` (nothing folded) once memory is
        flushed or cannot do what a write asks (the caller then takes the live path)."""
        if self._memory is None:
            return False
        opener = await self.projection.opener(events)
        memory = self._memory
        if memory is None:
            return False
        past = mark(memory.checkpoints.get(partition, "0-0"))
        writes = [
            (rec.entry_id, writes_for(rec, opener)) for rec in events if mark(rec.entry_id) > past
        ]
        try:
            memory.apply(partition, writes)
        except Unsupported as exc:
            log.warning("rebuild_fold_unsupported", error=str(exc), partition=partition)
            return False
        return True

    async def flush(self) -> None:
        """Write what memory holds (once); from then on batches take the live path."""
        async with self._flushing:
            if self._memory is not None:
                self._pending, self._memory = self._memory, None
            if self._pending is None:
                return
            try:
                await self._insert(self._pending)
            except ConnectionFailure as exc:
                raise SinkUnavailable(str(exc)) from exc
            await self.projection.setup()  # the indexes, before any live-path write or query
            self._pending = None

    async def _insert(self, memory: Documents) -> None:
        chunks: list[tuple[str, list[dict[str, Any]]]] = []
        for role, docs in memory.docs.items():
            values = list(docs.values())
            chunks.extend((role, values[i : i + CHUNK]) for i in range(0, len(values), CHUNK))
        queue = iter(chunks)

        async def writer() -> None:
            for role, docs in queue:
                collection = self.projection._collection(role)
                try:
                    await collection.bulk_write([InsertOne(d) for d in docs], ordered=False)
                except BulkWriteError as exc:  # a retried flush: inserted already
                    errors = exc.details.get("writeErrors") or []
                    if any(e.get("code") != DUPLICATE_KEY for e in errors):
                        raise

        await asyncio.gather(*(writer() for _ in range(WRITERS)))
        checkpoints = [
            UpdateOne(
                {"_id": partition, "mark": {"$not": {"$gte": mark(last)}}},
                {"$set": {"entry_id": last, "mark": mark(last)}},
                upsert=True,
            )
            for partition, last in sorted(memory.checkpoints.items())
        ]
        if checkpoints:
            await bulk_apply(self.projection._collection("checkpoints"), checkpoints)
        written = self.projection._written
        for partition, last in memory.checkpoints.items():
            written[partition] = max(written.get(partition, ""), mark(last))

    async def checkpoint(self, partition: int) -> str | None:
        if self._memory is not None:
            return self._memory.checkpoints.get(partition)
        return await self.projection.checkpoint(partition)

    async def checkpoints(self) -> dict[int, str | None]:
        if self._memory is not None:
            return dict(self._memory.checkpoints)
        return await self.projection.checkpoints()
