"""An entry the decoder cannot read is dead-lettered, and re-driven once the code is fixed.

The log is immutable, so "fixing the cause" of an undecodable entry means fixing the code
that reads it — here, an upcaster that shipped with a bug for a quirk of old producers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from events.codec import FIELDS
from events.errors import MalformedEvent
from events.ids import now_at, uuid7
from events.store import EventStore
from events.upcasting import UPCASTERS, order_billed_v1_to_v2
from tests.support.memory_projection import RecordingProjection
from tests.support.projectors import append_adjustments, eventually
from workers.dlq import DeadLetters
from workers.runner import ProjectorRunner


async def append_v1_order_with_quirk(store: EventStore) -> str:
    """A schema-1 OrderBilled whose lines already say ``unit_price`` (one old producer did),
    which the shipped v1→v2 upcaster does not expect."""
    order_id = uuid7()
    aggregate = f"order:{order_id}"
    data = {
        "type": "OrderBilled",
        "order_id": order_id,
        "account_id": uuid7(),
        "lines": [{"product_id": uuid7(), "name": "Guaraná", "quantity": 2, "unit_price": 500}],
        "total": 1000,
    }
    event_id = uuid7()
    values = {
        "id": event_id,
        "type": "OrderBilled",
        "schema": "1",
        "aggregate": aggregate,
        "seq": "1",
        "at": now_at(),
        "actor": "legacy",
        "correlation": "",
        "causation": "",
        "source": "api",
        "data": json.dumps(data),
    }
    partition = store.keys.partition_of(aggregate)
    await store.redis.xadd(store.keys.log(partition), {k: values[k] for k in FIELDS})
    return event_id


def tolerant_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """The fixed upcaster: lines that already carry ``unit_price`` are taken as they are."""
    lines = [
        line if "unit_price" in line else {**line, "unit_price": line["price"]}
        for line in data.get("lines", [])
    ]
    lines = [
        {k: v for k, v in line.items() if k != "price"}
        | {"line_total": line.get("line_total", line["unit_price"] * line["quantity"])}
        for line in lines
    ]
    return {**data, "lines": lines}


async def test_undecodable_entry_is_redriven_after_the_upcaster_is_fixed(
    redis_client: aioredis.Redis, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"rec_{uuid.uuid4().hex[:8]}"
    projection = RecordingProjection(name)
    runner = ProjectorRunner(
        redis_client,
        store.keys,
        [projection],
        consumer="solo",
        batch=50,
        block_ms=200,
        lease_ms=3000,
        max_attempts=3,
        retry_base_ms=10,
    )
    event_id = await append_v1_order_with_quirk(store)
    await append_adjustments(store, [str(uuid.uuid4()) for _ in range(4)], 40)
    dead = DeadLetters(redis_client, store.keys)
    task = asyncio.create_task(runner.run())
    try:

        async def settled() -> bool:
            return len(projection.applied) == 40 and len(await dead.list(name)) == 1

        await eventually(settled, what="later events applied and one dead letter")
    finally:
        runner.stop()
        await asyncio.wait_for(task, 15)
    [letter] = await dead.list(name)
    assert letter.attempts == 3
    assert "cannot upcast OrderBilled v1" in letter.error
    assert event_id not in projection.applied

    with pytest.raises(MalformedEvent, match="cannot upcast"):
        await dead.redrive(projection, letter)  # not fixed yet: the letter stays
    assert len(await dead.list(name)) == 1

    assert UPCASTERS[("OrderBilled", 1)] is order_billed_v1_to_v2
    monkeypatch.setitem(UPCASTERS, ("OrderBilled", 1), tolerant_v1_to_v2)  # the code fix
    await dead.redrive(projection, letter)
    assert projection.applied[event_id] == 1
    assert await dead.list(name) == []
