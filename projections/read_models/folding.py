"""Folding a batch's writes so each read-model document gets one write per batch.

SecantusDB pays per write operation (index upkeep and query planning run in Python), so a
batch of 500 orders that touch the same 200 products costs far less as 200 folded updates
than as 1 200 single ones. Folding must keep the projection exactly once:

* A write carries its own guard: ``Own(seq)`` (the aggregate's version, ``version < seq``),
  ``Cross(partition, at)`` (the per-source-partition watermark ``applied.p<P>``) or none
  (commutative and idempotent by itself, e.g. ``$max``).
* A fold's guard says "none of the folded writes is applied yet": ``version < first seq``
  and, for every source partition, ``applied.p<P> < first mark``. Versions and watermarks
  only move forward and a document write is atomic, so a fold is either wholly applied or
  not at all, and its guard is true exactly when none of its writes took effect.
* A fold that matches nothing may have met a document where a different batch split applied
  part of its writes; the caller then replays the fold's single writes, each guarded on its
  own (the per-event path), which finishes exactly what is missing.
* Writes to one document that do not combine into one update (conflicting paths) are not
  folded at all: a later fold must never overtake an earlier one that missed. Own and
  other writes of a document have separate guards and commute, so they may be one fold
  or two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo import InsertOne, UpdateOne

from events.positions import parse_stream_id

Update = dict[str, dict[str, Any]]
"""An update document: operator (``$set``, ``$inc``, ``$max``, ``$setOnInsert``) → fields."""

OPERATORS = ("$set", "$inc", "$max", "$setOnInsert")


def mark(entry_id: str) -> str:
    """A stream entry id as a string that sorts like the id (for ``$gte`` watermarks)."""
    ms, seq = parse_stream_id(entry_id)
    return f"{ms:016d}-{seq:012d}"


@dataclass(frozen=True, slots=True)
class Own:
    """The document is the event's own aggregate: apply where ``version < seq``."""

    seq: int


@dataclass(frozen=True, slots=True)
class Cross:
    """The document is another aggregate: apply where ``applied.p<partition> < at``."""

    partition: int
    at: str
    """The entry id as a sortable mark (see ``projection.mark``)."""

    @property
    def field(self) -> str:
        return f"applied.p{self.partition}"


@dataclass(frozen=True, slots=True)
class Write:
    """One event's change to one document, without its guard fields."""

    role: str
    """Collection role: ``accounts`` | ``products`` | ``orders``."""
    doc_id: str
    update: Update
    guard: Own | Cross | None = None
    upsert: bool = False
    sole_writer: bool = False
    """Nothing else ever writes this document (an order): create it by a plain insert."""

    def guarded(self) -> tuple[dict[str, Any], Update]:
        """The filter and update of this write applied on its own."""
        update = _copy(self.update)
        query: dict[str, Any] = {"_id": self.doc_id}
        match self.guard:
            case Own(seq):
                query["version"] = {"$lt": seq}
                update.setdefault("$set", {})["version"] = seq
            case Cross() as cross:
                query[cross.field] = {"$not": {"$gte": cross.at}}
                update.setdefault("$set", {})[cross.field] = cross.at
                update.setdefault("$setOnInsert", {})["version"] = 0
            case None:
                pass
        return query, update

    def op(self) -> UpdateOne:
        query, update = self.guarded()
        return UpdateOne(query, update, upsert=self.upsert)


@dataclass(slots=True)
class Fold:
    """Writes to one document, of one guard family, applied as one operation."""

    role: str
    doc_id: str
    writes: list[Write] = field(default_factory=list)

    @property
    def upsert(self) -> bool:
        return any(w.upsert for w in self.writes)

    @property
    def insert(self) -> bool:
        """A creation nothing else writes: an insert (duplicate key = already there)."""
        return all(w.sole_writer for w in self.writes) and self.writes[0].upsert

    @property
    def creates(self) -> bool:
        """Whether the fold begins with an upsert: on a missing document it inserts it."""
        return self.writes[0].upsert

    def guarded(self) -> tuple[dict[str, Any], Update]:
        if len(self.writes) == 1:
            return self.writes[0].guarded()
        update = combine([w.update for w in self.writes])
        if update is None:  # pragma: no cover - fold() only builds combinable folds
            raise ValueError(f"writes to {self.doc_id} do not combine")
        query: dict[str, Any] = {"_id": self.doc_id}
        seqs = [w.guard.seq for w in self.writes if isinstance(w.guard, Own)]
        if seqs:
            query["version"] = {"$lt": min(seqs)}
            update.setdefault("$set", {})["version"] = max(seqs)
        marks: dict[str, list[str]] = {}
        for w in self.writes:
            if isinstance(w.guard, Cross):
                marks.setdefault(w.guard.field, []).append(w.guard.at)
        for name, ats in sorted(marks.items()):
            query[name] = {"$not": {"$gte": min(ats)}}
            update.setdefault("$set", {})[name] = max(ats)
        if marks and not seqs:
            update.setdefault("$setOnInsert", {})["version"] = 0
        normalised = _normalise(update)
        if normalised is None:  # pragma: no cover - the guard fields never conflict
            raise ValueError(f"guard fields of {self.doc_id} conflict")
        return query, normalised

    def op(self, missing: bool = False) -> UpdateOne | InsertOne[dict[str, Any]]:
        """The fold as one operation. ``missing`` says the document is known to be absent:
        a fold that creates it is then the insert of what its upsert would insert, which
        SecantusDB writes far more cheaply than an upsert (no query, no update path)."""
        query, update = self.guarded()
        if (self.insert or (missing and self.creates)) and (
            doc := _inserted(self.doc_id, update)
        ) is not None:
            return InsertOne(doc)
        return UpdateOne(query, update, upsert=self.upsert)


def fold(writes: Iterable[Write]) -> dict[str, list[Fold]]:
    """Each document's writes folded into as few :class:`Fold` as exact, per role.

    A document's own writes fold in ``seq`` order, its other writes (cross-aggregate and
    unguarded ones, which commute) together; both go into one fold when the own writes
    start with the document's creation (nothing can precede an upsert then), else into
    one fold each. Writes that do not combine stay a fold each, in order.
    """
    groups: dict[tuple[str, str], tuple[list[Write], list[Write]]] = {}
    for write in writes:
        own, shared = groups.setdefault((write.role, write.doc_id), ([], []))
        (own if isinstance(write.guard, Own) else shared).append(write)
    out: dict[str, list[Fold]] = {}
    for (role, doc_id), (own, shared) in groups.items():
        own.sort(key=lambda w: w.guard.seq)  # type: ignore[union-attr]
        folds = out.setdefault(role, [])
        if own and shared and own[0].upsert and _combinable(own + shared):
            folds.append(Fold(role, doc_id, own + shared))
            continue
        for group in (own, shared):
            if len(group) > 1 and _combinable(group):
                folds.append(Fold(role, doc_id, group))
            else:
                folds.extend(Fold(role, doc_id, [w]) for w in group)
    return out


def _combinable(group: list[Write]) -> bool:
    # A write that creates the document must come first: a plain update that precedes an
    # upsert would match nothing on a missing document, which one folded upsert cannot say.
    if any(w.upsert for w in group[1:]) and not group[0].upsert:
        return False
    return combine([w.update for w in group]) is not None


def combine(updates: list[Update]) -> Update | None:
    """The single update equal to applying ``updates`` in order, or ``None`` if none is.

    ``$set`` keeps the last value, ``$inc`` sums, ``$max`` keeps the largest,
    ``$setOnInsert`` keeps the first.
    """
    out: Update = {}
    for update in updates:
        for op, fields in update.items():
            if op not in OPERATORS:
                return None
            target = out.setdefault(op, {})
            for path, value in fields.items():
                if op == "$set":
                    target[path] = value
                elif op == "$inc":
                    target[path] = target.get(path, 0) + value
                elif op == "$max":
                    target[path] = max(target[path], value) if path in target else value
                else:
                    target.setdefault(path, value)
    return _normalise(out)


def _normalise(update: Update) -> Update | None:
    """Drop the ``$setOnInsert`` fields another operator decides anyway; ``None`` when two
    operators would touch the same path (the server rejects that)."""
    inserting = update.get("$setOnInsert", {})
    for path in list(inserting):
        if path in update.get("$set", {}):
            del inserting[path]  # set on insert and on update alike
        elif path in update.get("$inc", {}) and inserting[path] == 0:
            del inserting[path]  # $inc on a missing field starts from 0
    paths = [path for fields in update.values() for path in fields]
    if len(set(paths)) != len(paths):
        return None
    taken = set(paths)
    for path in paths:
        parts = path.split(".")
        if any(".".join(parts[:n]) in taken for n in range(1, len(parts))):
            return None
    return {op: fields for op, fields in update.items() if fields}


def _inserted(doc_id: str, update: Update) -> dict[str, Any] | None:
    """The document an upsert of ``update`` would insert into an empty slot (the filter
    adds only ``_id``: its guards are ranges, not equalities): every ``$set``, ``$inc``
    (from 0), ``$max`` and ``$setOnInsert`` value at its path, dotted paths as embedded
    documents. ``None`` for any other operator or paths that overlap."""
    doc: dict[str, Any] = {"_id": doc_id}
    made = {id(doc)}  # embedded documents built here (a value is never written into)
    for op, fields in update.items():
        if op not in OPERATORS:
            return None
        for path, value in fields.items():
            *parents, leaf = path.split(".")
            target = doc
            for part in parents:
                if part not in target:
                    target[part] = {}
                    made.add(id(target[part]))
                target = target[part]
                if id(target) not in made:
                    return None
            if leaf in target:
                return None
            target[leaf] = value
    return doc


def _copy(update: Update) -> Update:
    return {op: dict(fields) for op, fields in update.items()}
