"""Append throughput through the event store ÷ raw XADD on the same Redis, in the same run."""

from __future__ import annotations

import uuid

from bench.common import Timer, rate
from events.codec import COMPACT_FIELDS, compact_values
from events.connection import connect
from events.ids import uuid7
from events.keys import Keys
from events.store import Append, EventStore
from events.types import OrderBilled, OrderLine


def sample_order() -> OrderBilled:
    lines = [
        OrderLine(
            product_id=uuid7(),
            name="Café torrado 500g",
            quantity=2,
            unit_price=2490,
            line_total=4980,
        ),
        OrderLine(
            product_id=uuid7(), name="Pão de queijo", quantity=1, unit_price=1290, line_total=1290
        ),
    ]
    return OrderBilled(order_id=uuid7(), account_id=uuid7(), lines=lines, total=6270)


def raw_fields(event: OrderBilled) -> dict[str, str | bytes]:
    """The same (compact) entry the store writes, so raw XADD moves the same bytes."""
    values = compact_values(
        uuid7(), event, event.aggregate(), "account:" + event.account_id, uuid7(), "", "api"
    )
    values.insert(4, "1")  # seq, which the append function inserts after aggregate
    return dict(zip(COMPACT_FIELDS, values, strict=True))


async def run(redis_url: str, events: int = 5000, batch: int = 100) -> dict[str, object]:
    client = connect(redis_url)
    prefix = f"ssbench:{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix=prefix, partitions=8)
    store = EventStore(client, keys)
    await store.load_functions()
    orders = [sample_order() for _ in range(events)]
    try:
        with Timer() as raw_single:
            for order in orders:
                await client.xadd(f"{prefix}:raw1", raw_fields(order))
        with Timer() as raw_pipelined:
            for i in range(0, events, batch):
                async with client.pipeline(transaction=False) as pipe:
                    for order in orders[i : i + batch]:
                        pipe.xadd(f"{prefix}:raw2", raw_fields(order))
                    await pipe.execute()
        with Timer() as store_single:
            for order in orders:
                await store.append(Append(events=[order], expect={order.aggregate(): 0}))
        fresh = [sample_order() for _ in range(events)]
        with Timer() as store_batched:
            for i in range(0, events, batch):
                chunk = fresh[i : i + batch]
                await store.append(
                    Append(events=list(chunk), expect={o.aggregate(): 0 for o in chunk})
                )
    finally:
        cleanup = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(cleanup), 500):
            await client.delete(*cleanup[i : i + 500])
        await client.aclose()
    single = rate(events, store_single.seconds)
    batched = rate(events, store_batched.seconds)
    raw1 = rate(events, raw_single.seconds)
    raw2 = rate(events, raw_pipelined.seconds)
    return {
        "store_single_events_per_s": single,
        "store_batched_events_per_s": batched,
        "raw_xadd_events_per_s": raw1,
        "raw_xadd_pipelined_events_per_s": raw2,
        "limit": "raw XADD of the same envelope on the same Redis (unpipelined / pipelined)",
        "ratio": round(single / raw1, 3) if raw1 else None,
        "ratio_batched": round(batched / raw2, 3) if raw2 else None,
        "params": {
            "events": events,
            "batch": batch,
            "partitions": 8,
            "redis": "private redis-server, appendonly yes, appendfsync always",
            "checks": "expected version per aggregate, XADD, state HSET",
        },
    }
