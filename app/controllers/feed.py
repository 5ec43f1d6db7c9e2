"""Live event feeds as Server-Sent Events: the whole log (admin) and one order's events (owner).

Every message's ``id:`` is a read-your-writes position (:mod:`events.positions`). On the
whole-log feed it names the last entry sent on *every* partition (``0-0`` for one where
nothing was sent yet), so a browser that reconnects with ``Last-Event-ID`` resumes each
partition exactly after the entry it saw last: no gap, no repeat. An order's feed names the
order's own partition only. Without ``Last-Event-ID`` (or ``?after=``) a feed starts at the
log's current end; the order feed first replays the order's history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from app.auth import Principal, admin_only
from app.problems import problem_responses
from app.services import services
from events.codec import full_fields
from events.keys import Keys
from events.positions import InvalidPosition, format_position, parse_position
from events.store import EventStore

BLOCK_MS = 1000
"""Longest wait in one ``XREAD``: well under the Redis client's socket timeout (redis-py's
default is 5 s; a blocking read that outlasts it fails and would end the feed)."""
IDLE_BLOCKS = 10
"""An idle feed sends a comment after this many empty reads, so a dead client shows."""
BATCH = 200
HIDDEN_FIELDS = ("password_hash",)
"""Fields of an event's data the feed never shows (``AccountCreated`` carries the hash)."""

Filter = Callable[[dict[bytes, bytes]], bool]

After = Annotated[
    str | None,
    QueryParameter(
        name="after",
        required=False,
        max_length=2000,
        description="A position to resume after (for clients that cannot send Last-Event-ID).",
    ),
]


def message(partition: int, entry_id: str, fields: dict[bytes, bytes], position: str) -> bytes:
    """The JSON an SSE ``data:`` line carries: the envelope, ``data`` decoded, secrets removed.

    A compact entry is shown in its full form (:func:`events.codec.full_fields`), so a
    client sees the same envelope whichever form the entry was written in."""
    envelope: dict[str, Any] = {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, v in full_fields(fields).items()
    }
    raw = envelope.pop("data", "{}")
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        data = raw
    if isinstance(data, dict):
        for hidden in HIDDEN_FIELDS:
            data.pop(hidden, None)
    envelope.update(data=data, partition=partition, entry_id=entry_id, position=position)
    return msgspec.json.encode(envelope)


async def tails(redis: Any, keys: Keys, partitions: list[int]) -> dict[int, str]:
    """The id of the last entry of each partition now (``0-0``: empty)."""
    async with redis.pipeline(transaction=False) as pipe:
        for p in partitions:
            pipe.xrevrange(keys.log(p), count=1)
        rows = await pipe.execute()
    return {p: (_text(r[0][0]) if r else "0-0") for p, r in zip(partitions, rows, strict=True)}


def resume_point(request: Request[Any, Any, Any], after: str | None) -> dict[int, str] | None:
    token = request.headers.get("last-event-id") or after
    if not token:
        return None
    try:
        return parse_position(token)
    except InvalidPosition as exc:
        raise ValidationException("Last-Event-ID is not a position this server issued") from exc


async def follow(
    redis: Any, keys: Keys, cursor: dict[int, str], keep: Filter | None = None
) -> AsyncIterator[ServerSentEventMessage]:
    """Entries after ``cursor`` (partition → entry id) as they arrive, forever.

    ``cursor`` advances on every entry read, kept or not, so an id always names how far the
    feed has read; a filtered-out entry is simply never re-read."""
    # An id with no data is not dispatched, but it sets the browser's Last-Event-ID: a client
    # that reconnects before any entry arrived still resumes where this feed started.
    yield ServerSentEventMessage(
        comment="streamshop feed", id=format_position(cursor), retry=1000, data=None
    )
    idle = 0
    while True:
        got = await redis.xread(
            {keys.log(p): cursor[p] for p in sorted(cursor)}, count=BATCH, block=BLOCK_MS
        )
        if not got:
            idle += 1
            if idle % IDLE_BLOCKS == 0:
                yield ServerSentEventMessage(comment="idle")
            continue
        by_stream = {keys.log(p): p for p in cursor}
        for stream, entries in got:
            p = by_stream[_text(stream)]
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                cursor[p] = entry_id
                if keep is not None and not keep(fields):
                    continue
                position = format_position(cursor)
                yield ServerSentEventMessage(
                    data=message(p, entry_id, fields, position).decode(), id=position
                )


@get(
    "/events/stream",
    guards=[admin_only],
    tags=["ops"],
    operation_id="streamEvents",
    responses=problem_responses(400, 401, 403),
)
async def stream_events(
    request: Request[Principal, Any, Any], state: State, after: After = None
) -> ServerSentEvent:
    """Every new log entry, on all partitions, as Server-Sent Events (admin only).

    ``id:`` is a position naming every partition; reconnect with ``Last-Event-ID`` (or
    ``?after=``) to get exactly the entries missed."""
    store = services(state).store
    keys = store.keys
    every = list(range(keys.partitions))
    wanted = resume_point(request, after) or {}
    cursor = await tails(store.redis, keys, [p for p in every if p not in wanted])
    cursor.update({p: e for p, e in wanted.items() if p in every})
    return ServerSentEvent(follow(store.redis, keys, cursor))


@get(
    "/orders/{order_id:str}/events",
    tags=["orders"],
    operation_id="streamOrderEvents",
    responses=problem_responses(400, 401, 404),
)
async def stream_order_events(
    request: Request[Principal, Any, Any],
    state: State,
    order_id: Annotated[str, PathParameter(max_length=100)],
    after: After = None,
) -> ServerSentEvent:
    """The order's events, history first, then live (its owner or an admin; others: 404)."""
    store = services(state).store
    keys = store.keys
    aggregate = f"order:{order_id}"
    partition = keys.partition_of(aggregate)
    # The tail first: an entry appended while the history is read comes from ``follow``.
    # ``heads`` counts the archive: a partition archived whole still has its history.
    tail = (await store.heads())[partition] or "0-0"
    history = await order_history(store, aggregate, partition)
    user = request.user
    owner = _owner(history)
    if owner is None or (owner != user.account_id and user.role != "admin"):
        raise NotFoundException("no such order")
    start = (resume_point(request, after) or {}).get(partition, "0-0")

    async def feed() -> AsyncIterator[ServerSentEventMessage]:
        done = {partition: start}
        for entry_id, fields in history:
            if _after(entry_id, start) and _after(tail, entry_id, inclusive=True):
                done[partition] = entry_id
                position = format_position(done)
                yield ServerSentEventMessage(
                    data=message(partition, entry_id, fields, position).decode(), id=position
                )
        cursor = {partition: max(start, tail, key=_key)}
        async for msg in follow(store.redis, keys, cursor, keep=_of(aggregate)):
            yield msg

    return ServerSentEvent(feed())


async def order_history(
    store: EventStore, aggregate: str, partition: int
) -> list[tuple[str, dict[bytes, bytes]]]:
    """The aggregate's entries, oldest first, archive included (none: unknown order).

    Its partition is read backwards in Redis until as many entries were found as its
    decision state's version says it has. Fewer found means the older ones were archived:
    they are read through the store's archive-aware reader up to the archive marker (read
    after the scan, so an archive run that trimmed meanwhile left them below it), and only
    the scanned entries past the marker are kept, so none is shown twice.
    """
    redis, keys = store.redis, store.keys
    version = int(await redis.hget(keys.state(aggregate), "v") or 0)
    if not version:
        return []
    found: list[tuple[str, dict[bytes, bytes]]] = []
    before = "+"
    while len(found) < version:
        rows = await redis.xrevrange(keys.log(partition), max=before, min="-", count=1000)
        if not rows:
            break
        for raw_id, fields in rows:
            if fields.get(b"aggregate", b"").decode() == aggregate:
                found.append((_text(raw_id), fields))
        before = f"({_text(rows[-1][0])}"
    found.reverse()
    if len(found) >= version:
        return found
    marker = (await store.archived()).get(partition)
    if marker is None:
        return found
    older: list[tuple[str, dict[bytes, bytes]]] = []
    after = "0-0"
    while rows := await store.read_raw(partition, after, 1000, through=marker):
        older += [(e, f) for e, f in rows if f.get(b"aggregate", b"").decode() == aggregate]
        after = rows[-1][0]
    return older + [(e, f) for e, f in found if _after(e, marker)]


OPENING_EVENTS = (b"OrderBilled", b"OrderPlaced")
"""The events that open an order and name its account: bill-now, and checkout."""


def _owner(history: list[tuple[str, dict[bytes, bytes]]]) -> str | None:
    for _, fields in history:
        if fields.get(b"type") in OPENING_EVENTS:
            data = msgspec.json.decode(full_fields(fields).get(b"data", b"{}"))
            return str(data.get("account_id", "")) or None
    return None


def _of(aggregate: str) -> Filter:
    wanted = aggregate.encode()
    return lambda fields: fields.get(b"aggregate") == wanted


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _after(a: str, b: str, *, inclusive: bool = False) -> bool:
    return _key(a) >= _key(b) if inclusive else _key(a) > _key(b)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
