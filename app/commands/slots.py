"""An append whose keys would span hash slots on a Redis Cluster, as single-slot steps in
an order that keeps what the one atomic append guarantees on one node (issue #19).

The runner (:func:`app.commands.runner.run`) sends every append of a clustered store here;
an append whose keys share one slot is the one call it always was, and on one node this
module is never reached. Otherwise three kinds of keys may lie outside the slot of the
event's own aggregate (its *home*), and each has its step:

1. *count first* (the referenced aggregate's slot): the aggregate that the event counts a
   new member into and requires live (:func:`events.effects.counted_first`: a product's new
   category, a new category's parent) gets its counter moved *before* the home append, by
   ``streamshop_count_v1``, which checks there that it exists and is not deleted. From then
   on the category cannot be deleted (its delete's append requires the count to be zero),
   so the home append may drop the category's conditions: the race of a delete against a
   creation is decided in the category's slot, exactly once.
2. *reserve first* (each reservation's slot): a unique name (a legacy product id, an
   email's keyed digest) is taken by ``streamshop_reserve_v1`` before the home append, so
   the value is never free between the two.
3. the *home* append, with what stays in its slot; counters that other slots lose (the
   category a product leaves) follow as counter effects (:mod:`events.effects`).
4. *release after* (each old name's slot): a name the append gives up (an email's old
   unkeyed name) is freed by ``streamshop_unreserve_v1`` only while the owner still holds
   it, after the home append, so the value is held under one name or both, never none.

A home append that is refused undoes steps 1 and 2 (the count goes back by a marker of
its own; a name this call took is freed), except for names when the refusal is a version
conflict on the owner itself: then another command made that aggregate meanwhile and may
rely on the same name. Crash points are in ``docs/architecture.md`` ("Redis Cluster").
"""

from __future__ import annotations

import dataclasses

import msgspec

from events.effects import EFFECT_MARKER_TTL, counted_first
from events.errors import (
    AggregateMissing,
    AppendRejected,
    SlotsDiffer,
    UniquenessViolation,
    VersionConflict,
)
from events.ids import at_ms, parse_at, uuid7
from events.store import Append, AppendResult, EventStore, Reservation

COUNT_FUNCTION = "streamshop_count_v1"
RESERVE_FUNCTION = "streamshop_reserve_v1"
UNRESERVE_FUNCTION = "streamshop_unreserve_v1"


async def append_across_slots(store: EventStore, append: Append) -> AppendResult:
    """``store.append(append)``, in single-slot steps where its keys span slots (see the
    module docstring). Raises what the one append would raise; :class:`SlotsDiffer` for
    what no step covers (several events of different slots)."""
    if store.append_slots(append) is None:
        return await store.append(append)
    keys, slot = store.keys, store.redis.keyslot
    owner = append.events[0].aggregate()
    home = slot(keys.state(owner))
    counted = counted_first(append.events[0]) if len(append.events) == 1 else None
    if counted is not None and (slot(keys.state(counted)) == home or counted not in append.state):
        counted = None
    first = [r for r in append.reserve if slot(keys.uniq(r.kind, r.value)) != home]
    after = [(k, v) for k, v in append.release if slot(keys.uniq(k, v)) != home]
    ms = at_ms(parse_at(append.at))
    ids = append.event_ids or [uuid7(ms) for _ in append.events]
    stripped = dataclasses.replace(
        append,
        seen=None,
        state={a: ch for a, ch in append.state.items() if a != counted},
        guards=[g for g in append.guards if g.aggregate != counted],
        exists=[a for a in append.exists if a != counted],
        absent=[(a, f) for a, f in append.absent if a != counted],
        reserve=[r for r in append.reserve if r not in first],
        release=[n for n in append.release if n not in after],
        event_ids=ids,
    )
    incr = dict(append.state[counted].incr) if counted is not None else {}
    if counted is not None:
        await _count(store, ids[0], "first", counted, incr, live=counted in append.exists)
    taken: list[Reservation] = []
    try:
        for reservation in first:
            if await _reserve(store, reservation):
                taken.append(reservation)
        result = await store.append(stripped)
    except (AppendRejected, SlotsDiffer) as exc:  # refused, or never sent: nothing written
        if counted is not None:
            await _count(store, ids[0], "undo", counted, {f: -d for f, d in incr.items()})
        if not (isinstance(exc, VersionConflict) and exc.aggregate == owner):
            await _release(store, taken)
        raise
    if result.duplicate:  # the command happened before: this attempt wrote nothing else
        if counted is not None:
            await _count(store, ids[0], "undo", counted, {f: -d for f, d in incr.items()})
        await _release(store, taken)
        return result
    for kind, value in after:
        await store.fcall(UNRESERVE_FUNCTION, [keys.uniq(kind, value)], owner)
    return result


async def _count(
    store: EventStore,
    event_id: str,
    step: str,
    aggregate: str,
    incr: dict[str, int],
    *,
    live: bool = False,
) -> None:
    """Move ``aggregate``'s counters once per (event, step); with ``live``, only while it
    exists and is not deleted (else :class:`AggregateMissing`, nothing written)."""
    partition = store.keys.partition_of(aggregate)
    marker = f"{store.keys.prefix}:effect:{{p{partition}}}:{event_id}:{step}"
    request = {"ttl": EFFECT_MARKER_TTL, "a": aggregate, "incr": incr, "live": live}
    reply = await store.fcall(
        COUNT_FUNCTION, [marker, store.keys.state(aggregate)], msgspec.json.encode(request)
    )
    if reply not in (b"ok", "ok", b"dup", "dup"):
        raise AggregateMissing(aggregate)


async def _reserve(store: EventStore, reservation: Reservation) -> bool:
    """Take ``reservation``'s name for its owner; whether this call took it (``False``: the
    owner held it already). Raises :class:`UniquenessViolation` when another owner does."""
    key = store.keys.uniq(reservation.kind, reservation.value)
    reply = await store.fcall(RESERVE_FUNCTION, [key], reservation.owner)
    if reply in (b"new", "new"):
        return True
    if reply in (b"ok", "ok"):
        return False
    holder = msgspec.json.decode(reply)["owner"]
    raise UniquenessViolation(reservation.kind, reservation.value, holder)


async def _release(store: EventStore, taken: list[Reservation]) -> None:
    for reservation in taken:
        key = store.keys.uniq(reservation.kind, reservation.value)
        await store.fcall(UNRESERVE_FUNCTION, [key], reservation.owner)
