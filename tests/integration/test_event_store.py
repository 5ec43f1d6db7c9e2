"""The event store against the real Redis: atomic, conditional, idempotent appends."""

from __future__ import annotations

import asyncio

import pytest

from app.commands.colocation import colocated_id
from events.codec import COMPACT_FIELDS, FIELDS
from events.errors import (
    AggregateMissing,
    GuardFailed,
    MalformedEvent,
    SlotsDiffer,
    UniquenessViolation,
    VersionConflict,
)
from events.ids import uuid7
from events.store import Append, EventStore, Guard, Reservation, StateChange
from events.types import AccountCreated, OrderBilled, OrderLine, ProductCreated
from tests.conftest import RedisTarget
from tests.support.cluster import single_and_cluster

pytestmark = single_and_cluster


def account(
    email: str = "ana@example.com", name: str = "Ana", account_id: str | None = None
) -> AccountCreated:
    return AccountCreated(
        account_id=account_id or uuid7(), email=email, name=name, password_hash="h"
    )


def product(stock: int = 10) -> ProductCreated:
    return ProductCreated(product_id=uuid7(), sku=uuid7(), name="Café", price=1990, stock=stock)


async def test_append_assigns_sequence_and_round_trips(store: EventStore) -> None:
    event = account(name="Zoë Ñandú 東京 🚀")
    result = await store.append(Append(events=[event], expect={event.aggregate(): 0}))
    [(partition, _)] = result.entry_ids
    [read] = await store.read_partition(partition)
    assert read.event == event
    assert read.seq == 1
    assert read.aggregate == event.aggregate()
    assert (await store.state(event.aggregate()))["v"] == "1"


async def test_stale_expected_version_is_rejected_and_appends_nothing(store: EventStore) -> None:
    event = account()
    await store.append(Append(events=[event], expect={event.aggregate(): 0}))
    with pytest.raises(VersionConflict) as caught:
        await store.append(Append(events=[event], expect={event.aggregate(): 0}))
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert await store.count() == 1


async def test_fifty_concurrent_reservations_of_one_key_let_exactly_one_win(
    store: EventStore,
) -> None:
    """Each account id is drawn into the reservation's partition, as sign-up does
    (:mod:`app.commands.colocation`), so on the cluster too each attempt is one call."""
    email = "same@example.com"
    reservation = store.keys.uniq("email", email)

    async def sign_up() -> bool:
        new_id = colocated_id(store.keys, lambda i: f"account:{i}", reservation)
        event = account(email=email, account_id=new_id)
        try:
            await store.append(
                Append(
                    events=[event],
                    expect={event.aggregate(): 0},
                    reserve=[Reservation("email", event.email, event.aggregate())],
                )
            )
        except UniquenessViolation:
            return False
        return True

    outcomes = await asyncio.gather(*(sign_up() for _ in range(50)))
    assert outcomes.count(True) == 1
    assert await store.count() == 1


@pytest.mark.cross_slot("an order, its account and its product, each in its own {pN}")
async def test_failed_check_in_multi_aggregate_append_changes_nothing(
    store: EventStore, redis_target: RedisTarget
) -> None:
    """One node: the guard fails inside the one atomic call. Cluster: the call would span
    slots, so the store refuses it with SlotsDiffer before sending anything (the billing
    saga replaces it there, ``test_saga.py``). Either way nothing is written."""
    buyer, item = account(), product(stock=1)
    for created in (buyer, item):
        await store.append(Append(events=[created]))
    before_item = await store.state(item.aggregate())
    before_count = await store.count()
    order = OrderBilled(
        order_id=uuid7(),
        account_id=buyer.account_id,
        lines=[
            OrderLine(
                product_id=item.product_id,
                name="Café",
                quantity=2,
                unit_price=1990,
                line_total=3980,
            )
        ],
        total=3980,
    )
    with pytest.raises(SlotsDiffer if redis_target.cluster else GuardFailed):
        await store.append(
            Append(
                events=[order],
                expect={order.aggregate(): 0},
                exists=[buyer.aggregate()],
                guards=[Guard(item.aggregate(), "stock", 2)],
                state={item.aggregate(): StateChange(incr={"stock": -2})},
            )
        )
    assert await store.state(item.aggregate()) == before_item
    assert await store.state(order.aggregate()) == {}
    assert await store.count() == before_count


async def test_missing_aggregate_is_a_named_rejection(store: EventStore) -> None:
    # The order id is drawn into the account's partition: one slot on the cluster too.
    order_id = next(
        i
        for i in iter(uuid7, None)
        if store.keys.tag(f"order:{i}") == store.keys.tag("account:nobody")
    )
    order = OrderBilled(order_id=order_id, account_id="nobody", lines=[], total=0)
    with pytest.raises(AggregateMissing):
        await store.append(Append(events=[order], exists=["account:nobody"]))
    assert await store.count() == 0


async def test_same_idempotency_key_twice_returns_first_result_and_appends_once(
    store: EventStore, redis_target: RedisTarget
) -> None:
    """One node: the record is tagged by the key. Cluster: by the command's aggregate
    (``idempotency_home``, as the runner sets it), so the append stays in one slot."""
    owner = account()
    home = owner.aggregate() if redis_target.cluster else None
    first = await store.append(
        Append(events=[owner], idempotency_key="k1", idempotency_home=home, result='{"order":1}')
    )
    again = account(account_id=owner.account_id)
    second = await store.append(
        Append(events=[again], idempotency_key="k1", idempotency_home=home, result='{"order":2}')
    )
    assert second.duplicate and not first.duplicate
    assert second.result == '{"order":1}'
    assert second.position == first.position
    assert await store.count() == 1


async def test_recorded_outcome_is_readable_before_deciding_again(
    store: EventStore, redis_target: RedisTarget
) -> None:
    owner = account()
    home = owner.aggregate() if redis_target.cluster else None
    assert await store.recorded("k2", home) is None
    first = await store.append(
        Append(events=[owner], idempotency_key="k2", idempotency_home=home, result="r")
    )
    replay = await store.recorded("k2", home)
    assert replay is not None and replay.duplicate
    assert (replay.result, replay.position) == ("r", first.position)


async def test_every_entry_has_the_envelope_fields_in_order(store: EventStore) -> None:
    """Compact entries share one field set (Redis stores the names once per stream node);
    a store told to write the full form writes every envelope field."""
    full = EventStore(store.redis, store.keys, store.personal, compact=False)
    for event in (account(), product()):
        await store.append(Append(events=[event]))
        await full.append(Append(events=[event]))
    forms = []
    for p in range(store.keys.partitions):
        forms += [[k.decode() for k in fields] for _, fields in await store.read_raw(p)]
    assert sorted(forms) == sorted([list(COMPACT_FIELDS)] * 2 + [list(FIELDS)] * 2)


async def test_unknown_extra_fields_in_a_stored_event_are_tolerated(store: EventStore) -> None:
    log = store.keys.log(0)
    data = b'{"type":"ProductDeleted","product_id":"p1","added_later":{"x":1}}'
    eid = await store.redis.xadd(log, _fields("ProductDeleted", data) | {"extra": "field"})
    [event] = await store.read_partition(0)
    assert event.entry_id == eid.decode()
    assert event.event.product_id == "p1"


@pytest.mark.parametrize(
    "fields",
    [
        {"data": b"not json"},
        {"type": "NoSuchEvent"},
        {"seq": "one"},
        {"data": b'{"type":"ProductDeleted"}'},
        {"data": b"\xff\xfe"},
    ],
)
async def test_garbled_entry_raises_the_named_decode_error(
    store: EventStore, fields: dict[str, bytes | str]
) -> None:
    good = _fields("ProductDeleted", b'{"type":"ProductDeleted","product_id":"p"}')
    eid = await store.redis.xadd(store.keys.log(1), good | fields)
    with pytest.raises(MalformedEvent) as caught:
        await store.read_partition(1)
    assert caught.value.entry_id == eid.decode()


async def test_entry_missing_a_field_raises_the_named_decode_error(store: EventStore) -> None:
    fields = _fields("ProductDeleted", b'{"type":"ProductDeleted","product_id":"p"}')
    del fields["aggregate"]
    await store.redis.xadd(store.keys.log(2), fields)
    with pytest.raises(MalformedEvent, match="aggregate"):
        await store.read_partition(2)


async def test_read_all_merges_every_partition(store: EventStore) -> None:
    events = [account(email=f"u{i}@example.com") for i in range(20)]
    for event in events:
        await store.append(Append(events=[event]))
    seen = [e.event async for e in store.read_all(batch=3)]
    assert sorted(e.account_id for e in seen) == sorted(e.account_id for e in events)
    assert len({e.partition async for e in store.read_all()}) > 1


def _fields(event_type: str, data: bytes) -> dict[str, str | bytes]:
    return {
        "id": uuid7(),
        "type": event_type,
        "schema": "1",
        "aggregate": "product:p",
        "seq": "1",
        "at": "2026-11-23T20:00:00.000Z",
        "actor": "test",
        "correlation": "c",
        "causation": "",
        "source": "test",
        "data": data,
    }
