"""Warehouse batches of all partitions written side by side attribute every line as a
one-at-a-time fold does (the per-product locks order fact inserts against version changes;
without them this test fails)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from events.codec import RecordedEvent
from events.store import Append, EventStore
from events.types import AccountCreated, OrderBilled, OrderLine, ProductCreated, ProductUpdated
from projections.warehouse import WarehouseProjection
from tests.integration.test_read_models import by_partition, log_of, new_id


@pytest.fixture(name="pool")
async def pool_fixture(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=8)
    yield pool
    await pool.close()


async def warehouse(pool: asyncpg.Pool) -> WarehouseProjection:
    projection = WarehouseProjection(pool, schema=f"dw_{uuid.uuid4().hex[:10]}")
    await projection.setup()
    return projection


async def prices_changing_under_orders(store: EventStore) -> list[RecordedEvent]:
    account = new_id()
    products = [new_id() for _ in range(3)]
    await store.append(
        Append(
            events=[
                AccountCreated(
                    account_id=account, email="d@example.com", name="D", password_hash="x"
                )
            ]
        )
    )
    prices = dict.fromkeys(products, 100)
    for product in products:
        await store.append(
            Append(events=[ProductCreated(product_id=product, sku="S", name="Chá", price=100)])
        )
    rng = random.Random(3)
    for n in range(30):
        product = rng.choice(products)
        if n % 4 == 3:
            prices[product] += 10
            await store.append(
                Append(events=[ProductUpdated(product_id=product, price=prices[product])])
            )
            continue
        line = OrderLine(
            product_id=product,
            name="Chá",
            quantity=1,
            unit_price=prices[product],
            line_total=prices[product],
        )
        await store.append(
            Append(
                events=[
                    OrderBilled(
                        order_id=new_id(), account_id=account, lines=[line], total=prices[product]
                    )
                ]
            )
        )
    return await log_of(store)


async def attribution(pool: asyncpg.Pool, dw: WarehouseProjection) -> list[tuple]:
    rows = await pool.fetch(
        f"SELECT f.order_id, f.unit_price, d.price, d.version FROM {dw.schema}.fact_order_line f"
        f" LEFT JOIN {dw.schema}.dim_product d"
        " ON d.product_id = f.product_id AND d.version = f.product_version ORDER BY f.order_id"
    )
    return [tuple(r) for r in rows]


async def test_partitions_applied_concurrently_attribute_lines_as_one_by_one(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    events = await prices_changing_under_orders(store)
    reference = await warehouse(pool)
    for event in events:
        await reference.apply(event.partition, [event])
    expected = await attribution(pool, reference)
    assert all(price == billed for _, billed, price, _ in expected)

    partitions = by_partition(events)
    for seed in range(3):
        rng = random.Random(seed)
        concurrent = await warehouse(pool)

        async def feed(partition: int, dw: WarehouseProjection, size: int) -> None:
            batch = partitions[partition]
            for start in range(0, len(batch), size):
                await dw.apply(partition, batch[start : start + size])

        await asyncio.gather(*(feed(p, concurrent, rng.randint(1, 4)) for p in partitions))
        assert await attribution(pool, concurrent) == expected
