"""The warehouse projection against the real PostgreSQL: star schema, SCD-2, exactly once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from events.codec import RecordedEvent
from events.store import Append, EventStore
from events.types import (
    AccountCreated,
    LoginFailed,
    LoginSucceeded,
    OrderBilled,
    OrderLine,
    ProductCreated,
    ProductUpdated,
)
from projections import warehouse
from projections.warehouse import WarehouseProjection
from tests.integration.test_read_models import by_partition, log_of, new_id


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(params=["arrays", "staged"])
def line_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways ``_write_lines`` writes order lines: a few as arrays in one statement, many
    staged by COPY (here from the first line on)."""
    if request.param == "staged":
        monkeypatch.setattr(warehouse, "STAGE_FROM", 1)
    return str(request.param)


def new_schema() -> str:
    return f"dw_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def dw(pool: asyncpg.Pool) -> WarehouseProjection:
    projection = WarehouseProjection(pool, schema=new_schema())
    await projection.setup()
    await projection.setup()
    return projection


def order(order_id: str, account_id: str, product_id: str, qty: int, price: int) -> OrderBilled:
    line = OrderLine(
        product_id=product_id, name="Café", quantity=qty, unit_price=price, line_total=qty * price
    )
    return OrderBilled(order_id=order_id, account_id=account_id, lines=[line], total=qty * price)


def id_outside(store: EventStore, kind: str, partition: int) -> str:
    """An id whose aggregate lives in another partition than ``partition``."""
    while True:
        candidate = new_id()
        if store.keys.partition_of(f"{kind}:{candidate}") != partition:
            return candidate


async def price_change_between_orders(store: EventStore) -> dict[str, str]:
    product = new_id()
    partition = store.keys.partition_of(f"product:{product}")
    ids = {
        "product": product,
        "account": new_id(),
        "o1": id_outside(store, "order", partition),
        "o2": id_outside(store, "order", partition),
    }
    signup = AccountCreated(
        account_id=ids["account"], email="bia@example.com", name="Bia", password_hash="x"
    )
    await store.append(Append(events=[signup]))
    await store.append(
        Append(events=[ProductCreated(product_id=product, sku="C", name="Café", price=1000)])
    )
    await store.append(Append(events=[order(ids["o1"], ids["account"], product, 1, 1000)]))
    await store.append(Append(events=[ProductUpdated(product_id=product, price=1500)]))
    await store.append(Append(events=[order(ids["o2"], ids["account"], product, 2, 1500)]))
    return ids


async def apply_in(dw: WarehouseProjection, events: list[RecordedEvent]) -> None:
    for partition, batch in by_partition(events).items():
        await dw.apply(partition, batch)


async def attribution(pool: asyncpg.Pool, dw: WarehouseProjection) -> list[tuple]:
    rows = await pool.fetch(
        f"SELECT f.order_id, f.quantity, f.unit_price, f.revenue, d.version, d.price"
        f" FROM {dw.schema}.fact_order_line f JOIN {dw.schema}.dim_product d"
        " USING (product_id) WHERE d.version = f.product_version"
        " ORDER BY f.billed_at, f.product_version"  # orders may share a millisecond
    )
    return [tuple(r) for r in rows]


async def test_each_line_points_at_the_version_valid_when_billed(
    store: EventStore, dw: WarehouseProjection, pool: asyncpg.Pool, line_path: str
) -> None:
    ids = await price_change_between_orders(store)
    await apply_in(dw, await log_of(store))
    assert await attribution(pool, dw) == [
        (ids["o1"], 1, 1000, 1000, 1, 1000),
        (ids["o2"], 2, 1500, 3000, 2, 1500),
    ]
    versions = await pool.fetch(
        f"SELECT version, price, valid_from, valid_to, is_current FROM {dw.schema}.dim_product"
        " ORDER BY version"
    )
    assert [(v["version"], v["price"], v["is_current"]) for v in versions] == [
        (1, 1000, False),
        (2, 1500, True),
    ]
    assert versions[0]["valid_to"] == versions[1]["valid_from"]
    assert versions[1]["valid_to"] is None


async def test_orders_applied_before_the_product_versions_are_attributed_the_same(
    store: EventStore, dw: WarehouseProjection, pool: asyncpg.Pool, line_path: str
) -> None:
    ids = await price_change_between_orders(store)
    events = await log_of(store)
    await apply_in(dw, [e for e in events if e.type == "OrderBilled"])
    await apply_in(dw, [e for e in events if e.type != "OrderBilled"])
    assert [row[4] for row in await attribution(pool, dw)] == [1, 2]
    assert [row[0] for row in await attribution(pool, dw)] == [ids["o1"], ids["o2"]]


async def snapshot(pool: asyncpg.Pool, schema: str) -> dict[str, list]:
    tables = ("dim_date", "dim_account", "dim_product", "fact_order_line", "fact_login")
    return {
        t: [tuple(r) for r in await pool.fetch(f"SELECT * FROM {schema}.{t} ORDER BY 1, 2")]
        for t in tables
    }


async def test_replayed_batches_change_nothing_and_a_rebuild_is_identical(
    store: EventStore, dw: WarehouseProjection, pool: asyncpg.Pool, line_path: str
) -> None:
    await price_change_between_orders(store)
    events = await log_of(store)
    await apply_in(dw, events)
    first = await snapshot(pool, dw.schema)
    await apply_in(dw, events)
    for event in events:
        await dw.apply(event.partition, [event])
    assert await snapshot(pool, dw.schema) == first
    rebuilt = WarehouseProjection(pool, schema=new_schema())
    await rebuilt.setup()
    # partitions in another relative order, each in log order
    for partition, batch in sorted(by_partition(events).items(), reverse=True):
        await rebuilt.apply(partition, batch)
    assert await snapshot(pool, rebuilt.schema) == first
    assert await dw.checkpoint(events[-1].partition) is not None


async def test_lines_written_as_arrays_or_staged_are_the_same_rows(
    store: EventStore, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await price_change_between_orders(store)
    events = await log_of(store)
    arrays = WarehouseProjection(pool, schema=new_schema())
    await arrays.setup()
    await apply_in(arrays, events)
    monkeypatch.setattr(warehouse, "STAGE_FROM", 1)
    staged = WarehouseProjection(pool, schema=new_schema())
    await staged.setup()
    await apply_in(staged, events)
    lines = await snapshot(pool, arrays.schema)
    assert len(lines["fact_order_line"]) == 2
    assert await snapshot(pool, staged.schema) == lines


async def test_logins_are_counted_per_account_and_day_and_emails_are_pseudonymised(
    store: EventStore, dw: WarehouseProjection, pool: asyncpg.Pool
) -> None:
    account = new_id()
    await store.append(
        Append(
            events=[
                AccountCreated(
                    account_id=account, email="cida@example.com", name="Cida", password_hash="h"
                )
            ]
        )
    )
    for _ in range(2):
        await store.append(
            Append(events=[LoginSucceeded(account_id=account, email_digest="dg-cida")])
        )
    await store.append(
        Append(
            events=[
                LoginFailed(email_digest="dg-cida", reason="wrong_password", account_id=account)
            ]
        )
    )
    await store.append(Append(events=[LoginFailed(email_digest="dg-x", reason="unknown_email")]))
    await apply_in(dw, await log_of(store))
    rows = await pool.fetch(
        f"SELECT email_digest, account_id, successes, failures FROM {dw.schema}.fact_login"
        " ORDER BY email_digest"
    )
    assert [tuple(r) for r in rows] == [("dg-cida", account, 2, 1), ("dg-x", None, 0, 1)]
    dim = await pool.fetchrow(f"SELECT * FROM {dw.schema}.dim_account")
    assert "@" not in str(dict(dim))
    assert dim["account_id"] == account
