"""The event store: an append-only, partitioned log on Redis Streams with atomic conditional appends.

Port, in the eventsourcing sense: ``append`` (one decision, all or nothing; its state writes
derived from :mod:`events.states`), ``load`` (typed decision states) and ``state`` /
``states`` (the raw hashes), ``read_partition`` / ``read_all`` (the log).
Serialisation lives in :mod:`events.codec`; key names in :mod:`events.keys`.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

from events.codec import (
    RecordedEvent,
    compact_values,
    decode_entry,
    encode,
    full_values,
)
from events.durability import ReplicaWait, fcall_acknowledged
from events.effects import EFFECTS_LIBRARY, SLOTS_LIBRARY, SPLITTABLE, apply_effects
from events.errors import (
    AggregateMissing,
    ArchiveError,
    EventStoreError,
    GuardFailed,
    RedisNotSuitable,
    SlotsDiffer,
    UniquenessViolation,
    VersionConflict,
)
from events.identity import log_identity
from events.ids import at_ms, is_canonical_at, now_at, parse_at, uuid7, uuid7_ms
from events.keys import Keys
from events.multiplexed import Multiplexed
from events.personal import PersonalData, RedisKeyStore
from events.positions import format_position, parse_stream_id
from events.states import (
    AggregateState,
    affected,
    decode_state,
    encode_field,
    evolve,
    initial,
)
from events.types import Event

if TYPE_CHECKING:
    from events.archive import Archive

LIBRARY = "streamshop_v2"
"""append.lua: ``streamshop_put_state_v2``, and ``streamshop_append_v2`` of the release
before (full entries only), kept unchanged for its processes."""
APPEND_LIBRARY = "streamshop_append_v3"
APPEND_FUNCTION = "streamshop_append_v3"
READ_LIBRARY = "streamshop_read_v1"
STATES_FUNCTION = "streamshop_states_v1"
PUT_STATE_FUNCTION = "streamshop_put_state_v2"
IDEMPOTENCY_TTL = 24 * 3600

log = structlog.get_logger("events.store")


@dataclass(frozen=True, slots=True)
class Metadata:
    """Who and what caused an append; copied onto every event of it."""

    actor: str = "system"
    correlation: str = ""
    causation: str = ""
    source: str = "api"


@dataclass(frozen=True, slots=True)
class Guard:
    """``state(aggregate)[field] >= at_least`` must hold, checked inside the append."""

    aggregate: str
    field: str
    at_least: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """Reserve a unique ``value`` of ``kind`` for ``owner`` (fails if another owner holds it)."""

    kind: str
    value: str
    owner: str


@dataclass(slots=True)
class StateChange:
    """Decision-state writes for one aggregate: fields to set and counters to add to."""

    set: dict[str, str | int] = field(default_factory=dict)
    incr: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Append:
    """Everything one decision writes, and every condition under which it may.

    ``expect`` maps aggregate → the version the decision saw (0: must not exist yet).
    Events of an aggregate get ``seq`` = its version + 1, + 2, … inside the append.

    ``seen`` holds the typed decision states the decision read. Given it, the decision-state
    writes (``state``) and the counter floors (``guards``) are derived from
    :func:`events.states.evolve` over ``events`` (:func:`derive_writes`); a decider never
    writes them by hand. Without it, ``state`` and ``guards`` are taken as given (low-level
    use by tests and tools).
    """

    events: list[Event]
    meta: Metadata = field(default_factory=Metadata)
    expect: dict[str, int] = field(default_factory=dict)
    exists: list[str] = field(default_factory=list)
    absent: list[tuple[str, str]] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    reserve: list[Reservation] = field(default_factory=list)
    release: list[tuple[str, str]] = field(default_factory=list)
    state: dict[str, StateChange] = field(default_factory=dict)
    idempotency_key: str | None = None
    idempotency_home: str | None = None
    """The aggregate whose partition keeps the idempotency record (default: the key's own);
    a saga step keeps it in the slot it writes, see :meth:`events.keys.Keys.idem`."""
    result: str = ""
    event_ids: list[str] | None = None
    seen: dict[str, AggregateState] | None = None
    at: str = field(default_factory=now_at)
    """The events' append time (the envelope's ``at``); login failures evolve with it."""

    def __post_init__(self) -> None:
        if self.seen is None:
            return
        if self.state:
            raise ValueError("an append with `seen` derives its state writes; give no `state`")
        self.state, guards = derive_writes(self.seen, self.events, self.expect, self.at)
        self.guards = [*self.guards, *guards]


def derive_writes(
    seen: Mapping[str, AggregateState],
    events: Iterable[Event],
    expect: Mapping[str, int],
    at: str,
) -> tuple[dict[str, StateChange], list[Guard]]:
    """What an append writes to the decision state: ``evolve`` each seen state over the new
    events, then write the difference.

    - An aggregate seen at version 0 is written whole.
    - A field listed in its state's ``COUNTERS`` is written as ``HINCRBY`` by the change
      (concurrent orders on one product then commute), and a decrease adds a :class:`Guard`
      ``field >= floor - change``, checked inside the atomic append: the floor holds against
      every concurrent writer, not only against the state this decision read.
    - Any other changed field is set outright, which is only safe when the append expects
      the version it was decided on; anything else is a bug in the decider.
    - An aggregate the decision did not read starts from its initial state: only its
      counters may then change (an order's cancellation returning stock to its products).
    """
    moment = int(parse_at(at).timestamp())
    base = dict(seen)
    after = dict(seen)
    for event in events:
        for aggregate in affected(event):
            if aggregate not in after:
                # Not read: only its counters may change (by a delta, whatever its value),
                # which the version check below enforces.
                base[aggregate] = after[aggregate] = initial(aggregate)
            after[aggregate] = evolve(aggregate, after[aggregate], event, moment)
    changes: dict[str, StateChange] = {}
    guards: list[Guard] = []
    for aggregate, new in after.items():
        old = base[aggregate]
        names = [f for f in new.__struct_fields__ if f != "v"]
        if old.v == 0 and new.v > 0:
            change = StateChange(set={f: encode_field(getattr(new, f)) for f in names})
        else:
            change = StateChange()
            for f in names:
                before, now = getattr(old, f), getattr(new, f)
                if before == now:
                    continue
                if f in new.COUNTERS:
                    change.incr[f] = now - before
                    if now < before and (floor := new.COUNTERS[f]) is not None:
                        guards.append(Guard(aggregate, f, floor + before - now))
                else:
                    change.set[f] = encode_field(now)
        if change.set and expect.get(aggregate) != old.v:
            raise ValueError(
                f"the decision sets {sorted(change.set)} of {aggregate} without expecting "
                f"its version {old.v}"
            )
        if change.set or change.incr:
            changes[aggregate] = change
    return changes, guards


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where the events landed. ``duplicate``: the idempotency key was seen; nothing was written
    and ``result`` is what the first append stored."""

    entry_ids: list[tuple[int, str]]
    duplicate: bool = False
    result: str = ""

    @property
    def positions(self) -> dict[int, str]:
        last: dict[int, str] = {}
        for p, eid in self.entry_ids:
            if p not in last or parse_stream_id(eid) > parse_stream_id(last[p]):
                last[p] = eid
        return last

    @property
    def position(self) -> str:
        return format_position(self.positions)


def _replayed(stored: dict[str, Any]) -> AppendResult:
    """An idempotency record (``{ids, parts, result}``, written by the append) as a result."""
    pairs = list(zip(stored.get("parts") or [], stored.get("ids") or [], strict=False))
    return AppendResult(entry_ids=pairs, duplicate=True, result=stored.get("result", ""))


class _KeyIndex:
    """KEYS for one FCALL: each key once, referred to by its 1-based Lua index."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        index = self._index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._index[key] = len(self.keys)
        return index


class EventStore:
    """The log and the write side's decision state, on one Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        personal: PersonalData | None = None,
        calls: Multiplexed | None = None,
        *,
        compact: bool = True,
        short: bool = True,
        replica_wait: ReplicaWait | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.replica_wait = replica_wait
        """``REDIS_WAIT_REPLICAS``: every write through :meth:`fcall` is acknowledged only once
        that many replicas hold it (:mod:`events.durability`); ``None``: no wait."""
        self.calls = calls
        """Where :meth:`fcall` sends the command path's calls, when given (the API gives one:
        :mod:`events.multiplexed`); else through ``redis``. Its owner closes it."""
        self.compact = compact
        """Write compact entries where the id can carry ``at`` (:mod:`events.codec`);
        ``False`` writes every entry in the full form, which readers of the release
        before the compact form can still decode."""
        self.short = short
        """Give a compact entry short ``data`` where its type has a short form
        (:data:`events.codec.SHORT_KEYS`); ``False`` keeps the compact form's first
        ``data``, which readers of the release before short data can still decode."""
        self.personal = personal or PersonalData(
            RedisKeyStore(redis, keys.prefix), keys.digest_secret
        )
        """Seals, opens and forgets personal data (:mod:`events.personal`)."""
        self._identity: str | None = None
        self._archive: Archive | None = None

    # -- setup ---------------------------------------------------------------------------

    async def load_functions(self) -> None:
        """Load (or replace) the append and the read libraries; their names carry the
        version. Also makes sure the log has its identity.

        On a Redis Cluster the libraries go to every primary: a function lives on the node
        that loaded it (and its replicas), and an append runs on whichever primary owns its
        slot. :meth:`fcall` loads them again on a node that lacks them (one added by a
        resharding, or emptied by a restart without its AOF).
        """
        for name in ("append.lua", "append_v3.lua", "read.lua", "effects.lua", "slots.lua"):
            code = resources.files("events").joinpath(name).read_text()
            if isinstance(self.redis, RedisCluster):
                await self.redis.execute_command(
                    "FUNCTION LOAD", "REPLACE", code, target_nodes=RedisCluster.PRIMARIES
                )
            else:
                await self.redis.function_load(code, replace=True)
        await self.identity()

    async def fcall(self, function: str, keys: list[str], *args: str | bytes) -> Any:
        """``FCALL`` one of the library's functions; where the node answers that it has no
        such function (a new primary after a resharding), load the library and retry once.

        Raises :class:`SlotsDiffer` on a cluster when ``keys`` span hash slots.
        """
        try:
            return await self._fcall(function, keys, args)
        except RedisClusterException as exc:
            if "same key slot" not in str(exc):
                raise
            slots: dict[int, list[str]] = {}
            for key in keys:
                slots.setdefault(self.redis.keyslot(key), []).append(key)
            raise SlotsDiffer(function, slots) from exc
        except ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
            log.warning("redis_function_missing", function=function, error=str(exc))
            await self.load_functions()
            return await self._fcall(function, keys, args)

    async def _fcall(self, function: str, keys: list[str], args: tuple[str | bytes, ...]) -> Any:
        if self.replica_wait is not None:
            # FCALL and WAIT on one connection of the owning primary (WAIT counts the writes
            # of its own connection only), so neither the multiplexed client nor redis-py's
            # pool serves this call
            return await fcall_acknowledged(self.redis, self.replica_wait, function, keys, *args)
        if self.calls is not None:
            return await self.calls.call("FCALL", function, len(keys), *keys, *args)
        return await self.redis.fcall(function, len(keys), *keys, *args)

    async def identity(self) -> str:
        """The log's identity (:mod:`events.identity`), created before its first entry."""
        if self._identity is None:
            self._identity = await log_identity(self.redis, self.keys)
        return self._identity

    async def functions_loaded(self) -> bool:
        """Whether the libraries are loaded (on a cluster: on every primary)."""
        for library in (LIBRARY, APPEND_LIBRARY, READ_LIBRARY, EFFECTS_LIBRARY, SLOTS_LIBRARY):
            if isinstance(self.redis, RedisCluster):
                for node in self.redis.get_primaries():
                    listed = await self.redis.execute_command(
                        "FUNCTION LIST", "LIBRARYNAME", library, target_nodes=node
                    )
                    if not listed:
                        return False
            elif not await self.redis.function_list(library=library):
                return False
        return True

    # -- writing -------------------------------------------------------------------------

    def _request(self, append: Append) -> tuple[list[str], bytes, list[int], list[str]]:
        k = _KeyIndex()
        keys = self.keys
        req: dict[str, Any] = {}
        if append.idempotency_key is not None:
            req["idem"] = {
                "k": k(keys.idem(append.idempotency_key, append.idempotency_home)),
                "ttl": IDEMPOTENCY_TTL,
                "result": append.result,
            }
        if append.expect:
            req["expect"] = [
                {"k": k(keys.state(a)), "a": a, "v": v} for a, v in append.expect.items()
            ]
        if append.exists:
            req["exists"] = [{"k": k(keys.state(a)), "a": a} for a in append.exists]
        if append.absent:
            req["absent"] = [{"k": k(keys.state(a)), "a": a, "f": f} for a, f in append.absent]
        if append.guards:
            req["guards"] = [
                {"k": k(keys.state(g.aggregate)), "a": g.aggregate, "f": g.field, "ge": g.at_least}
                for g in append.guards
            ]
        if append.reserve:
            req["reserve"] = [
                {"k": k(keys.uniq(r.kind, r.value)), "kind": r.kind, "owner": r.owner}
                for r in append.reserve
            ]
        if append.release:
            req["release"] = [k(keys.uniq(kind, value)) for kind, value in append.release]
        if append.state:
            req["state"] = [
                {
                    "k": k(keys.state(a)),
                    "set": {f: str(v) for f, v in ch.set.items()},
                    "incr": ch.incr,
                }
                for a, ch in append.state.items()
            ]
        meta = append.meta
        at = append.at
        # A compact entry leaves ``at`` to its id (events.codec): generated ids carry the
        # millisecond of ``at``; a given id (an ingested event's) only where it happens to.
        ms = at_ms(parse_at(at))
        # ``at`` in the form the id gives back, in the range a UUIDv7 can hold
        compact = self.compact and 0 <= ms < 1 << 48 and is_canonical_at(at)
        ids = append.event_ids or [uuid7(ms) for _ in append.events]
        correlation = meta.correlation or ids[0]
        partitions: list[int] = []
        events = []
        for event_id, event in zip(ids, append.events, strict=True):
            aggregate = event.aggregate()
            p = keys.partition_of(aggregate)
            partitions.append(p)
            entry: dict[str, Any] = {"s": k(keys.log(p)), "k": k(keys.state(aggregate))}
            if compact and (append.event_ids is None or uuid7_ms(event_id) == ms):
                entry["c"] = True
                entry["f"] = compact_values(
                    event_id,
                    event,
                    aggregate,
                    meta.actor,
                    correlation,
                    meta.causation,
                    meta.source,
                    short=self.short,
                )
            else:
                entry["f"] = full_values(
                    event_id,
                    event,
                    aggregate,
                    at,
                    meta.actor,
                    correlation,
                    meta.causation,
                    meta.source,
                )
            events.append(entry)
        req["events"] = events
        if "idem" in req:
            req["idem"]["parts"] = partitions
        return k.keys, encode(req), partitions, ids

    async def append(self, append: Append) -> AppendResult:
        """Check every condition, then write state, events and idempotency record, atomically.

        Raises a subclass of :class:`~events.errors.AppendRejected` when a check fails; then
        nothing at all was written.
        """
        if not append.events:
            raise ValueError("an append needs at least one event")
        if self._identity is None:
            await self.identity()
        if isinstance(self.redis, RedisCluster) and (split := self._split(append)) is not None:
            home, grouped = split
            result = await self.append(home)
            if not result.duplicate:
                await apply_effects(self, (home.event_ids or [""])[0], grouped)
            return result
        keys, request, partitions, _ = self._request(append)
        raw = await self.fcall(APPEND_FUNCTION, keys, request)
        reply = msgspec.json.decode(raw)
        if "ok" in reply:
            return AppendResult(entry_ids=list(zip(partitions, reply["ok"], strict=True)))
        if "dup" in reply:
            return _replayed(reply["dup"])
        err = reply.get("err")
        if err == "conflict":
            raise VersionConflict(reply["aggregate"], int(reply["expected"]), int(reply["actual"]))
        if err == "missing":
            raise AggregateMissing(reply["aggregate"])
        if err == "guard":
            raise GuardFailed(
                reply["aggregate"], reply["field"], int(reply["actual"]), int(reply["required"])
            )
        if err == "unique":
            value = next((r.value for r in append.reserve if r.kind == reply["kind"]), "")
            raise UniquenessViolation(reply["kind"], value, reply["owner"])
        raise EventStoreError(f"unexpected reply from {APPEND_FUNCTION}: {raw!r}")

    def _split(self, append: Append) -> tuple[Append, dict[int, dict[str, dict[str, int]]]] | None:
        """On a cluster, an append of one :data:`events.effects.SPLITTABLE` event whose
        only writes outside its own slot are counters: the part in its slot, and the
        counter effects on the other slots by partition (:mod:`events.effects`). ``None``
        for any other append (it is one call, or it spans slots and is refused)."""
        if len(append.events) != 1 or not isinstance(append.events[0], SPLITTABLE):
            return None
        slot_of = self.redis.keyslot
        home_slot = slot_of(self.keys.state(append.events[0].aggregate()))
        at_home = [a for a in append.state if slot_of(self.keys.state(a)) == home_slot]
        away = {a: ch for a, ch in append.state.items() if a not in at_home}
        conditions = [*append.expect, *append.exists, *(a for a, _ in append.absent)]
        names = [
            *(self.keys.uniq(r.kind, r.value) for r in append.reserve),
            *(self.keys.uniq(kind, value) for kind, value in append.release),
        ]
        if (
            not away
            or any(ch.set for ch in away.values())
            or any(slot_of(name) != home_slot for name in names)
            or any(slot_of(self.keys.state(a)) != home_slot for a in conditions)
        ):
            return None
        grouped: dict[int, dict[str, dict[str, int]]] = {}
        for aggregate, change in away.items():
            grouped.setdefault(self.keys.partition_of(aggregate), {})[aggregate] = change.incr
        home = Append(
            events=append.events,
            meta=append.meta,
            expect=append.expect,
            exists=append.exists,
            absent=append.absent,
            guards=[g for g in append.guards if g.aggregate in at_home],
            reserve=append.reserve,
            release=append.release,
            state={a: append.state[a] for a in at_home},
            idempotency_key=append.idempotency_key,
            idempotency_home=append.idempotency_home,
            result=append.result,
            event_ids=append.event_ids or [uuid7()],
            at=append.at,
        )
        return home, grouped

    async def recorded(self, idempotency_key: str, home: str | None = None) -> AppendResult | None:
        """The outcome stored by an earlier append under ``idempotency_key``, if any.

        Lets a handler answer a retried command without deciding again (a decision re-run
        now could be refused, e.g. stock since sold out); the append re-checks the record
        atomically anyway, so this read is an optimisation, never the guard.
        """
        raw = await self.redis.get(self.keys.idem(idempotency_key, home))
        return None if raw is None else _replayed(msgspec.json.decode(raw))

    # -- decision state ------------------------------------------------------------------

    async def state(self, aggregate: str) -> dict[str, str]:
        """The decision state of one aggregate (``{}`` when it does not exist); ``v`` is its version."""
        raw = await self.redis.hgetall(self.keys.state(aggregate))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def states(self, aggregates: Iterable[str]) -> list[dict[str, str]]:
        """The decision states of ``aggregates``, in order, in one round trip (one
        ``FCALL_RO`` of the library's read function, cheaper on the client than a pipeline).

        On a Redis Cluster, one ``FCALL_RO`` per hash slot, concurrently: a read is not a
        decision, so states of several slots may be read apart (the append re-checks)."""
        keys = [self.keys.state(a) for a in aggregates]
        if not keys:
            return []
        if self.calls is not None and self.slots(keys) is None:
            replies = await self.calls.call("FCALL_RO", STATES_FUNCTION, len(keys), *keys)
        elif self.slots(keys) is None:
            replies = await self.redis.fcall_ro(STATES_FUNCTION, len(keys), *keys)
        else:
            groups: dict[int, list[int]] = {}
            for i, key in enumerate(keys):
                groups.setdefault(self.redis.keyslot(key), []).append(i)
            answers = await asyncio.gather(
                *(
                    self.redis.fcall_ro(STATES_FUNCTION, len(idx), *(keys[i] for i in idx))
                    for idx in groups.values()
                )
            )
            replies: list[Any] = [None] * len(keys)
            for idx, answer in zip(groups.values(), answers, strict=True):
                for i, raw in zip(idx, answer, strict=True):
                    replies[i] = raw
        return [
            {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)} for raw in replies
        ]

    @property
    def clustered(self) -> bool:
        """Whether the log is on a Redis Cluster (the client is :class:`RedisCluster`)."""
        return isinstance(self.redis, RedisCluster)

    def slots(self, keys: Iterable[str]) -> set[int] | None:
        """The hash slots of ``keys`` on a Redis Cluster when they are more than one;
        ``None`` on one node or when they share a slot (then one atomic call serves)."""
        if not isinstance(self.redis, RedisCluster):
            return None
        slots = {self.redis.keyslot(key) for key in keys}
        return slots if len(slots) > 1 else None

    def append_slots(self, append: Append) -> set[int] | None:
        """:meth:`slots` of every key ``append`` would touch."""
        if not self.clustered:
            return None  # one node: no need to build the request twice
        keys, _, _, _ = self._request(append)
        return self.slots(keys)

    async def load(self, aggregates: Iterable[str]) -> dict[str, AggregateState]:
        """The typed decision states of ``aggregates`` (see :mod:`events.states`), in one
        round trip; an aggregate that does not exist has its initial state."""
        names = list(dict.fromkeys(aggregates))
        raws = await self.states(names)
        return {a: decode_state(a, raw) for a, raw in zip(names, raws, strict=True)}

    async def owner_of(self, kind: str, value: str) -> str | None:
        """Who holds a unique value (e.g. the ``account:<id>`` behind an email), if anyone."""
        raw = await self.redis.get(self.keys.uniq(kind, value))
        return raw.decode() if raw is not None else None

    # -- reading the log -----------------------------------------------------------------

    async def read_raw(
        self, partition: int, after: str = "0-0", count: int = 1000, through: str | None = None
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries of one partition in ``(after, through]`` (``None``: to the end), undecoded.

        The one reader of the log: its archived part (:mod:`events.archive`) and the part
        still in Redis are read as one log, in order. Redis's archive marker and the stream
        are read in one transaction, so an archive run that trims meanwhile never opens a
        gap: the marker then says to take the range from the archive.
        """
        rows: list[tuple[str, dict[bytes, bytes]]] = []
        while len(rows) < count:
            start = rows[-1][0] if rows else after
            marker, live = await self._read_live(partition, start, count - len(rows), through)
            if marker is None or parse_stream_id(start) >= parse_stream_id(marker):
                return rows + live
            archived = await self._read_archived(
                partition, start, count - len(rows), through, marker
            )
            if not archived:
                return rows  # ``through`` ends the range inside the archived part
            rows += archived
        return rows

    async def _read_live(
        self, partition: int, after: str, count: int, through: str | None
    ) -> tuple[str | None, list[tuple[str, dict[bytes, bytes]]]]:
        start = "-" if after in ("0", "0-0") else f"({after}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.archived(partition))
            pipe.xrange(self.keys.log(partition), min=start, max=through or "+", count=count)
            marker, rows = await pipe.execute()
        return (
            None if marker is None else marker.decode(),
            [(eid.decode(), fields) for eid, fields in rows],
        )

    async def _read_archived(
        self, partition: int, after: str, count: int, through: str | None, marker: str
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries after ``after`` from the archive, which must hold the log up to ``marker``."""
        archive = await self.archive()
        last = archive.last(partition)
        if last is None or parse_stream_id(last) < parse_stream_id(marker):
            await asyncio.to_thread(archive.reload)  # a newer archive run committed more
            last = archive.last(partition)
        if last is None or parse_stream_id(last) < parse_stream_id(marker):
            raise ArchiveError(
                f"partition {partition}: Redis holds the log after {marker}, the archive at "
                f"{archive.url} only up to {last}"
            )
        # It holds entries after ``after`` (its last is past the marker): none read means
        # ``through`` ends the range first.
        return await asyncio.to_thread(archive.read, partition, after, count, through)

    async def archive(self) -> Archive:
        """The archive this log's old part moved to (its URL is recorded in Redis)."""
        if self._archive is None:
            url = await self.redis.get(self.keys.archive())
            if url is None:
                raise ArchiveError("part of the log is archived, but Redis names no archive")
            from events.archive import Archive  # pyarrow, only for a log that has an archive

            self._archive = await asyncio.to_thread(Archive, url.decode())
        return self._archive

    async def archived(self) -> dict[int, str]:
        """The last archived entry id per partition that has an archived part."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.keys.partitions):
                pipe.get(self.keys.archived(p))
            replies = await pipe.execute()
        return {p: m.decode() for p, m in enumerate(replies) if m is not None}

    async def read_partition(
        self, partition: int, after: str = "0-0", count: int = 1000
    ) -> list[RecordedEvent]:
        """Decoded events of one partition strictly after ``after`` (raises on a malformed entry)."""
        rows = await self.read_raw(partition, after, count)
        return [decode_entry(eid, fields, partition) for eid, fields in rows]

    async def iter_partition(
        self, partition: int, after: str = "0-0", batch: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        while True:
            events = await self.read_partition(partition, after, batch)
            for event in events:
                yield event
            if len(events) < batch:
                return
            after = events[-1].entry_id

    async def read_all(self, batch: int = 1000) -> AsyncIterator[RecordedEvent]:
        """Every event of every partition, merged by entry id (append time).

        Order across partitions is by time only; order within an aggregate is exact.
        """
        iterators = [self.iter_partition(p, batch=batch) for p in range(self.keys.partitions)]
        heap: list[tuple[tuple[int, int], int, RecordedEvent]] = []
        for p, it in enumerate(iterators):
            first = await anext(it, None)
            if first is not None:
                heap.append((parse_stream_id(first.entry_id), p, first))
        heapq.heapify(heap)
        while heap:
            _, p, event = heapq.heappop(heap)
            yield event
            nxt = await anext(iterators[p], None)
            if nxt is not None:
                heapq.heappush(heap, (parse_stream_id(nxt.entry_id), p, nxt))

    async def heads(self) -> dict[int, str | None]:
        """The last entry id of each partition (``None`` for an empty one), archive included."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.keys.partitions):
                pipe.xrevrange(self.keys.log(p), count=1)
                pipe.get(self.keys.archived(p))
            replies = await pipe.execute()
        heads: dict[int, str | None] = {}
        for p in range(self.keys.partitions):
            rows, marker = replies[2 * p], replies[2 * p + 1]
            heads[p] = rows[0][0].decode() if rows else (marker.decode() if marker else None)
        return heads

    async def count(self) -> int:
        """Entries in the log, archive included."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.keys.partitions):
                pipe.xlen(self.keys.log(p))
            replies = await pipe.execute()
        total = sum(replies)
        archived = await self.archived()
        if archived:
            archive = await self.archive()
            await asyncio.to_thread(archive.reload)
            for p, marker in archived.items():
                total += archive.rows(p)
                last = archive.last(p)
                if last is not None and last != marker:  # committed, not trimmed yet
                    overlap = await self.redis.xrange(self.keys.log(p), min=f"({marker}", max=last)
                    total -= len(overlap)
        return total


async def check_redis(redis: aioredis.Redis) -> list[str]:
    """Startup checks (invariant 4): refuse a Redis that could lose the log, warn on weak fsync.

    On a Redis Cluster every primary is checked: any of them holds a share of the log.
    Returns the warnings it logged, raises :class:`RedisNotSuitable` on a refusal.
    """
    if isinstance(redis, RedisCluster):
        warnings: list[str] = []
        for node in redis.get_primaries():
            try:
                found = await _check_node(redis, {"target_nodes": node})
            except RedisNotSuitable as exc:
                raise RedisNotSuitable(f"primary {node.name}: {exc}") from exc
            warnings += [f"{node.name}: {w}" for w in found]
        return warnings
    return await _check_node(redis, {})


async def _check_node(redis: aioredis.Redis, target: dict[str, Any]) -> list[str]:
    info = await redis.info("server", **target)
    version = str(info.get("redis_version", "0"))
    if tuple(int(x) for x in version.split(".")[:2]) < (7, 0):
        raise RedisNotSuitable(f"Redis {version} is too old: streamshop needs 7.0 or newer")
    warnings: list[str] = []
    try:
        config = await redis.config_get("maxmemory-policy", **target)
        config.update(await redis.config_get("appendonly", **target))
        config.update(await redis.config_get("appendfsync", **target))
    except ResponseError as exc:  # CONFIG can be disabled on managed Redis
        warnings.append(f"cannot read Redis config ({exc}); persistence not verified")
        log.warning("redis_config_unreadable", error=str(exc))
        return warnings
    cfg = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in config.items()
    }
    if cfg.get("maxmemory-policy") != "noeviction":
        raise RedisNotSuitable(
            f"maxmemory-policy is {cfg.get('maxmemory-policy')!r}: the log needs 'noeviction', "
            "or Redis may evict events"
        )
    if cfg.get("appendonly") != "yes":
        warnings.append("AOF persistence is off: acknowledged commands can be lost on a crash")
    elif cfg.get("appendfsync") != "always":
        warnings.append(
            f"appendfsync is {cfg.get('appendfsync')!r}: up to a second of acknowledged "
            "commands can be lost on a crash"
        )
    for warning in warnings:
        log.warning("redis_persistence_weak", detail=warning)
    return warnings
