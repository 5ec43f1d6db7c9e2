"""The rebuild's group commit of the warehouse (:mod:`projections.warehouse_bulk`: the
batches of all partitions handed in together, one transaction) gives the rows the live
path gives one event at a time, and an entry that fails still fails only its partition."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import msgspec

from events.codec import RecordedEvent
from events.store import Append, EventStore
from events.types import CartItemSet, CategoryCreated, LoginSucceeded, OrderBilled, OrderLine
from projections.warehouse_bulk import GroupCommit
from tests.integration.test_read_models import by_partition, log_of, new_id
from tests.integration.test_warehouse_concurrency import (  # noqa: F401 (pool_fixture: pool)
    pool_fixture,
    prices_changing_under_orders,
    warehouse,
)
from workers.verify import EXCLUDED_TABLES


async def shop(store: EventStore) -> list[RecordedEvent]:
    await prices_changing_under_orders(store)
    for n in range(6):
        account = new_id()
        await store.append(Append(events=[LoginSucceeded(account_id=account, email_digest="d")]))
        await store.append(
            Append(events=[CartItemSet(account_id=account, product_id=new_id(), quantity=1 + n)])
        )
    await store.append(Append(events=[CategoryCreated(slug="tea", name="Tea")]))
    return await log_of(store)


async def tables(pool: asyncpg.Pool, schema: str) -> dict[str, list[Any]]:
    names = [
        r["relname"]
        for r in await pool.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname <> ALL($2::text[])",
            schema,
            list(EXCLUDED_TABLES),
        )
    ]
    out: dict[str, list[Any]] = {}
    for name in sorted(names):
        rows = await pool.fetch(
            f'SELECT (to_jsonb(t) - \'recorded_at\')::text AS j FROM "{schema}"."{name}" t'
        )
        out[name] = sorted(r["j"] for r in rows)
    return out


async def test_group_commits_give_the_rows_of_one_event_at_a_time(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    events = await shop(store)
    reference = await warehouse(pool)
    for event in events:
        await reference.apply(event.partition, [event])
    expected = await tables(pool, reference.schema)
    assert expected["fact_order_line"] and expected["fact_login"]
    partitions = by_partition(events)
    for seed in range(3):
        rng = random.Random(seed)
        target = await warehouse(pool)
        grouped = GroupCommit(target)

        async def feed(partition: int, size: int, grouped: GroupCommit = grouped) -> None:
            batch = partitions[partition]
            for start in range(0, len(batch), size):
                await grouped.apply(partition, batch[start : start + size])
            await grouped.apply(partition, batch[-size:])  # a re-delivery: a no-op

        await asyncio.gather(*(feed(p, rng.randint(1, 5)) for p in partitions))
        assert await tables(pool, target.schema) == expected


async def test_an_entry_that_fails_fails_only_the_batch_it_came_from(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    events = await shop(store)
    partitions = by_partition(events)
    target = await warehouse(pool)
    grouped = GroupCommit(target)
    bad_partition = next(p for p, batch in partitions.items() if len(batch) > 1)
    sale = next(e for e in partitions[bad_partition] if isinstance(e.event, OrderBilled))
    # A NUL in a text column is refused by PostgreSQL: the entry's own failure.
    poisoned_line = OrderLine(
        product_id="p", name="bad\x00name", quantity=1, unit_price=10, line_total=10
    )
    poisoned = msgspec.structs.replace(
        sale,
        event=msgspec.structs.replace(sale.event, lines=[poisoned_line], total=10),
    )
    others = [p for p in partitions if p != bad_partition]
    async with grouped._writing:  # hold the writer so the batches queue for one write
        applies = asyncio.gather(
            grouped.apply(bad_partition, [poisoned]),
            *(grouped.apply(p, partitions[p]) for p in others),
            return_exceptions=True,
        )
        for _ in range(500):
            if len(grouped._queue) == 1 + len(others):
                break
            await asyncio.sleep(0.01)
        assert len(grouped._queue) == 1 + len(others)
    outcomes = await applies
    assert isinstance(outcomes[0], Exception)
    assert all(o is None for o in outcomes[1:])
    checkpoints = await target.checkpoints()
    assert bad_partition not in checkpoints or checkpoints[bad_partition] == "0-0"
    for p in others:
        assert checkpoints[p] == partitions[p][-1].entry_id
