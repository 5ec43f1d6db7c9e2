"""The decision state as a projection: verify it against the fold of the log, rebuild it from it.

The Redis hashes the deciders read (``{prefix}:state:…``) are a cache of
``fold(evolve, events)`` (:mod:`events.states`). ``streamshop verify state`` compares every
hash with that fold, and checks that every account holds its email reservation where the
fold says (reservations are written by appends only: verify reports them, rebuild leaves
them); ``streamshop rebuild state`` rewrites the hashes that differ, which is also how a
field newly added to a state is backfilled for existing aggregates.

Safe while the API runs: each append bumps the field ``w`` of every hash it writes. A round
first reads every hash (with its ``w``), then folds the log; an aggregate whose ``w`` is
unchanged afterwards saw no append since it was read, so every event of it is in the fold.
The rebuild writes each aggregate in one Redis Function call
(``streamshop_put_state_v2``) that replaces the whole hash only if ``w`` is still the one
read: a decision reads the old hash or the new one, never half of either, and a
concurrent append wins; the aggregates it touched go into the next round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import msgspec

from app.commands.accounts import email_reservation
from events.states import AccountState, AggregateState, affected, encode_state, evolve, initial
from events.store import PUT_STATE_FUNCTION, EventStore
from workers.progress import Progress

ROUNDS = 5
"""Rounds of read → fold → compare before an aggregate that keeps changing is given up on."""

WRITES = "w"
"""The hash field every append increments; not part of the state."""

SECRETS = frozenset({"password_hash"})
"""Fields named but never printed (invariant 11: secrets stay on the write side)."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One aggregate whose hash is not the fold of the log; ``fields`` maps each differing
    field to (in Redis, from the log), ``None`` where one side lacks it."""

    aggregate: str
    fields: dict[str, tuple[str | None, str | None]]

    def __str__(self) -> str:
        def show(name: str, value: str | None) -> str:
            return "<redacted>" if name in SECRETS and value is not None else repr(value)

        shown = ", ".join(
            f"{f}: state={show(f, a)} log={show(f, b)}" for f, (a, b) in sorted(self.fields.items())
        )
        return f"{self.aggregate}: differs ({shown})"


@dataclass(frozen=True, slots=True)
class ReservationDifference:
    """An account whose email is not reserved where the fold of the log says, or an email
    two accounts hold (one under its old, unkeyed name, one under its keyed digest)."""

    aggregate: str
    problem: str

    def __str__(self) -> str:
        return f"{self.aggregate}: {self.problem}"


@dataclass(slots=True)
class StateReport:
    aggregates: int = 0
    events: int = 0
    differences: list[Difference] = field(default_factory=list)
    reservations: list[ReservationDifference] = field(default_factory=list)
    """Checked by ``verify`` only: reservations are written by appends, never rebuilt."""
    written: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    """Aggregates that changed in every round, so could not be checked (or written)."""

    @property
    def ok(self) -> bool:
        return not self.differences and not self.reservations and not self.busy


def _aggregate_of(key: str, prefix: str) -> str:
    """``{prefix}:state:{pN}:{aggregate}`` → ``aggregate``."""
    return key.removeprefix(f"{prefix}:state:").partition(":")[2]


async def read_hashes(
    store: EventStore, only: Iterable[str] | None = None
) -> dict[str, dict[str, str]]:
    """Every decision-state hash (or those of ``only``), by aggregate, ``w`` included."""
    redis = store.redis
    if only is None:
        pattern = f"{store.keys.prefix}:state:*"
        keys = [k.decode() async for k in redis.scan_iter(match=pattern, count=1000)]
        names = [_aggregate_of(k, store.keys.prefix) for k in keys]
    else:
        names = list(only)
        keys = [store.keys.state(a) for a in names]
    hashes: dict[str, dict[str, str]] = {}
    for start in range(0, len(keys), 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 1000]:
                pipe.hgetall(key)
            replies = await pipe.execute()
        for name, raw in zip(names[start : start + 1000], replies, strict=True):
            if raw:
                hashes[name] = {k.decode(): v.decode() for k, v in raw.items()}
    return hashes


async def fold_log(
    store: EventStore, progress: Progress | None = None, batch: int = 2000
) -> tuple[dict[str, AggregateState], int]:
    """The decision state of every aggregate the log names, and how many events it read."""
    states: dict[str, AggregateState] = {}
    count = 0
    async for recorded in store.read_all(batch=batch):
        moment = int(recorded.at.timestamp())
        for aggregate in affected(recorded.event):
            state = states.get(aggregate) or initial(aggregate)
            states[aggregate] = evolve(aggregate, state, recorded.event, moment)
        count += 1
        if progress is not None and count % 500 == 0:
            progress.add(500)
    if progress is not None:
        progress.add(count % 500)
    return states, count


def difference(
    aggregate: str, live: dict[str, str] | None, folded: AggregateState | None
) -> Difference | None:
    have = {k: v for k, v in (live or {}).items() if k != WRITES}
    want = encode_state(folded) if folded is not None else {}
    fields = {
        f: (have.get(f), want.get(f))
        for f in have.keys() | want.keys()
        if have.get(f) != want.get(f)
    }
    return Difference(aggregate, fields) if fields else None


async def email_reservations(
    store: EventStore, folded: dict[str, AggregateState], names: Iterable[str]
) -> list[ReservationDifference]:
    """Each account of ``names`` must hold its email where :func:`email_reservation` of its
    folded state says. One still under its old name must not also have its keyed digest
    held by another account (the duplicate the sign-up of before the upgrade let through);
    that needs the secret, so without one it is not checked."""
    accounts = [
        (a, s, r)
        for a in sorted(names)
        if isinstance(s := folded.get(a), AccountState) and (r := email_reservation(s))
    ]
    keyed = bool(store.keys.digest_secret)
    async with store.redis.pipeline(transaction=False) as pipe:
        for _, state, (kind, value) in accounts:
            pipe.get(store.keys.uniq(kind, value))
            if keyed and value == state.email:
                pipe.get(store.keys.uniq(kind, store.personal.email_digest(value)))
        replies = iter(await pipe.execute())
    found: list[ReservationDifference] = []
    for aggregate, state, (_, value) in accounts:
        owner = next(replies)
        if owner is None or owner.decode() != aggregate:
            held = "not held" if owner is None else f"held by {owner.decode()}"
            found.append(ReservationDifference(aggregate, f"its email reservation is {held}"))
        if keyed and value == state.email and (other := next(replies)) is not None:
            found.append(
                ReservationDifference(
                    aggregate,
                    f"its email, reserved under its old name, is also held by "
                    f"{other.decode()} under its keyed digest",
                )
            )
    return found


async def _round(
    store: EventStore, only: set[str] | None, progress: Progress | None
) -> tuple[
    dict[str, dict[str, str]],
    dict[str, AggregateState],
    int,
    list[str],
    list[ReservationDifference],
]:
    """Read the hashes, fold the log, read the email reservations, and name the aggregates
    an append touched meanwhile. Every append that moves a reservation also writes its
    account's hash, so a reservation read here of an aggregate that did not move is the
    one of the folded state."""
    before = await read_hashes(store, only)
    if progress is not None:
        progress.set_phase("fold", await store.count())
    folded, count = await fold_log(store, progress)
    names = set(before) | set(folded) if only is None else only
    reservations = await email_reservations(store, folded, names)
    after = await read_hashes(store, names)
    moved = [a for a in names if before.get(a, {}).get(WRITES) != after.get(a, {}).get(WRITES)]
    still = set(moved)
    return before, folded, count, moved, [r for r in reservations if r.aggregate not in still]


async def verify_state(store: EventStore, progress: Progress | None = None) -> StateReport:
    """Compare every aggregate's hash with the fold of the log (see the module docstring)."""
    report = StateReport()
    only: set[str] | None = None
    for _ in range(ROUNDS):
        before, folded, report.events, moved, reservations = await _round(store, only, progress)
        names = (set(before) | set(folded)) if only is None else only
        if only is None:
            report.aggregates = len(names)
        report.reservations += reservations
        for aggregate in sorted(names - set(moved)):
            diff = difference(aggregate, before.get(aggregate), folded.get(aggregate))
            if diff is not None:
                report.differences.append(diff)
        if not moved:
            return report
        only = set(moved)
    report.busy = sorted(only or ())
    return report


async def put_state(
    store: EventStore, aggregate: str, writes: str, state: AggregateState | None
) -> bool:
    request = {"w": writes, "fields": encode_state(state) if state is not None else {}}
    reply = await store.fcall(
        PUT_STATE_FUNCTION, [store.keys.state(aggregate)], msgspec.json.encode(request)
    )
    return (reply.decode() if isinstance(reply, bytes) else reply) == "ok"


async def rebuild_state(store: EventStore, progress: Progress | None = None) -> StateReport:
    """Rewrite every hash that is not the fold of the log; leaves equal ones untouched."""
    report = StateReport()
    only: set[str] | None = None
    for _ in range(ROUNDS):
        before, folded, report.events, _moved, _ = await _round(store, only, progress)
        names = (set(before) | set(folded)) if only is None else only
        if only is None:
            report.aggregates = len(names)
        if progress is not None:
            progress.set_phase("write")
        retry: set[str] = set()
        for aggregate in sorted(names):
            live = before.get(aggregate)
            diff = difference(aggregate, live, folded.get(aggregate))
            if diff is None:
                continue
            writes = (live or {}).get(WRITES, "")
            if await put_state(store, aggregate, writes, folded.get(aggregate)):
                report.written.append(aggregate)
            else:
                retry.add(aggregate)
        if not retry:
            return report
        only = retry
    report.busy = sorted(only or ())
    return report


async def run_verify(settings: Any, show: int, out: TextIO) -> int:
    """``streamshop verify state``: exit 0 when every hash is the fold, 1 naming those that differ."""
    async with _store(settings) as store:
        report = await verify_state(store)
    if report.ok:
        print(
            f"state: OK: {report.aggregates} aggregates equal the fold of {report.events} events",
            file=out,
        )
        return 0
    print(
        f"state: DIFFERS in {len(report.differences)} of {report.aggregates} aggregates, "
        f"{len(report.reservations)} email reservations (fold of {report.events} events)",
        file=out,
    )
    for diff in [*report.differences, *report.reservations][:show]:
        print(f"  {diff}", file=out)
    if len(report.differences) + len(report.reservations) > show:
        print(f"  … and {len(report.differences) + len(report.reservations) - show} more", file=out)
    for aggregate in report.busy:
        print(f"  {aggregate}: kept changing; not checked", file=out)
    return 1


async def run_rebuild(settings: Any, out: TextIO, progress_stream: TextIO, quiet: bool) -> int:
    """``streamshop rebuild state``: rewrite the hashes from the log; exit 1 if some kept changing."""
    progress = Progress("state", stream=progress_stream, enabled=not quiet)
    async with _store(settings) as store:
        await store.load_functions()
        progress.start(await store.count())
        report = await rebuild_state(store, progress)
    progress.finish()
    print(
        f"state: rebuilt from {report.events} events: {len(report.written)} of "
        f"{report.aggregates} aggregates rewritten",
        file=out,
    )
    for aggregate in report.busy:
        print(f"  {aggregate}: kept changing; not rewritten, run again", file=out)
    return 1 if report.busy else 0


class _store:
    """An :class:`EventStore` on its own Redis connection, for one CLI run."""

    def __init__(self, settings: Any) -> None:
        self.redis = settings.redis.connect()
        self.store = EventStore(self.redis, settings.redis.keys)

    async def __aenter__(self) -> EventStore:
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        await self.redis.aclose()
