"""Cross-slot counter effects (Redis Cluster, issue #19): an event of one aggregate that
changes only *counters* of aggregates in other hash slots (a payment, expiry or
cancellation moving its products' ``stock`` and ``reserved``) is appended in its own slot,
and its effect on each other slot follows as one ``streamshop_effects_v1`` call, applied
once per (event, slot) by a marker in that slot.

Two writers apply them, both idempotent through the marker: the append itself, right
after its home call, and the expiry worker (:mod:`workers.expiry`), which follows the log
and finishes the effects a crash between the two calls left undone. Until then the
counters lag the log; they never take stock that was not reserved (these effects only
return stock or drop reservations the same order took).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from events.ids import now_at
from events.types import (
    CategoryCreated,
    CategoryDeleted,
    Event,
    OrderCancelled,
    OrderExpired,
    OrderPaid,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
)

if TYPE_CHECKING:
    from events.store import EventStore

SLOTS_LIBRARY = "streamshop_slots_v1"
"""slots.lua: the pre-count, reserve and unreserve steps of :mod:`app.commands.slots`."""
EFFECTS_LIBRARY = "streamshop_effects_v1"
EFFECTS_FUNCTION = "streamshop_effects_v1"
EFFECT_MARKER_TTL = 7 * 24 * 3600
"""How long a marker says "applied": far longer than the expiry worker may lag."""

SPLITTABLE = (
    OrderPaid,
    OrderExpired,
    OrderCancelled,
    ProductCreated,
    ProductUpdated,
    ProductDeleted,
    CategoryCreated,
    CategoryDeleted,
)
"""Events whose effects on other aggregates are counter changes only, never a floor that a
concurrent writer could break: an order returns what the same order took; a product or a
category moves its category's or parent's unguarded ``products`` / ``children`` counts.
What :func:`counted_first` names is not among the effects that follow the append: it was
counted before it (:mod:`app.commands.slots`)."""


def counted_first(event: Event) -> str | None:
    """The aggregate that ``event`` counts a new member into, whose liveness it relies on
    (a product's new category, a new category's parent), or ``None``.

    On a cluster, when that aggregate sits in another slot, the count is taken *before*
    the event's append, in the aggregate's slot and guarded there (it must be live), so it
    cannot be deleted meanwhile (:mod:`app.commands.slots`); the effects that follow the
    append (and the expiry worker's repair of them) leave it out.
    """
    match event:
        case ProductCreated(category=str() as slug) if slug:
            return f"category:{slug}"
        case ProductUpdated(category=str() as slug, previous_category=str() as previous) if (
            slug and slug != previous
        ):
            return f"category:{slug}"
        case CategoryCreated(parent=str() as parent) if parent:
            return f"category:{parent}"
    return None


def counter_effects(event: Event, at: str | None = None) -> dict[str, dict[str, int]]:
    """Aggregate → counter deltas ``event`` makes on aggregates other than its own (and
    other than the one it :func:`counted_first`)."""
    from events.store import derive_writes

    own = event.aggregate()
    first = counted_first(event)
    changes, _ = derive_writes({}, [event], {own: 0}, at or now_at())
    return {a: dict(ch.incr) for a, ch in changes.items() if a not in (own, first) and ch.incr}


def foreign(
    store: EventStore, event: Event, effects: Mapping[str, dict[str, int]]
) -> dict[int, dict[str, dict[str, int]]]:
    """``effects`` grouped by partition, leaving out those in the event's own slot."""
    keys = store.keys
    home = store.redis.keyslot(keys.state(event.aggregate()))
    grouped: dict[int, dict[str, dict[str, int]]] = {}
    for aggregate, incr in effects.items():
        if store.redis.keyslot(keys.state(aggregate)) != home:
            grouped.setdefault(keys.partition_of(aggregate), {})[aggregate] = incr
    return grouped


async def apply_effects(
    store: EventStore, event_id: str, grouped: Mapping[int, Mapping[str, Mapping[str, int]]]
) -> int:
    """Apply each partition's effects of event ``event_id`` once; returns how many were new."""
    applied = 0
    for partition, effects in grouped.items():
        marker = f"{store.keys.prefix}:effect:{{p{partition}}}:{event_id}"
        names = list(effects)
        keys = [marker, *(store.keys.state(a) for a in names)]
        request = {
            "ttl": EFFECT_MARKER_TTL,
            "incr": [{"k": i + 2, "f": effects[a]} for i, a in enumerate(names)],
        }
        reply = await store.fcall(EFFECTS_FUNCTION, keys, msgspec.json.encode(request))
        applied += reply in (b"ok", "ok")
    return applied
