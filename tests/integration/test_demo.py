"""``streamshop demo`` writes a pt_BR demo shop through the command path, and only once."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

from app.commands.login import LogIn, LoginLimits, log_in
from app.passwords import Passwords
from app.settings import AuthSettings
from events.store import EventStore, Metadata
from events.types import AccountCreated, OrderBilled, ProductCreated
from tests.conftest import REDIS_URL
from workers.commands.demo import DEFAULT_PASSWORD, populate
from workers.demo import CATEGORIES, make_shop

CHEAP = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
ROOT = Path(__file__).resolve().parents[2]


async def _log(store: EventStore) -> list:
    return [event async for event in store.read_all()]


async def test_demo_appends_accounts_products_and_priced_orders(store: EventStore) -> None:
    shop = make_shop(accounts=5, products=5, orders=5, seed=3)
    report = await populate(store, shop, hash_password=Passwords(CHEAP).hash)

    events = await _log(store)
    types = Counter(e.type for e in events)
    assert types["AccountCreated"] == 5
    assert types["ProductCreated"] == 5
    assert types["OrderBilled"] == 5
    assert report.orders["created"] == 5
    products = {e.event.product_id: e.event for e in events if isinstance(e.event, ProductCreated)}
    assert {p.category for p in products.values()} <= set(CATEGORIES)
    for order in (e.event for e in events if isinstance(e.event, OrderBilled)):
        assert order.total == sum(line.line_total for line in order.lines)
        for line in order.lines:
            assert line.unit_price == products[line.product_id].price
            assert line.name == products[line.product_id].name
    emails = [e.event.email for e in events if isinstance(e.event, AccountCreated)]
    assert len(set(emails)) == 5


async def test_running_the_demo_again_appends_nothing(store: EventStore) -> None:
    shop = make_shop(accounts=4, products=6, orders=8, seed=11)
    await populate(store, shop, hash_password=Passwords(CHEAP).hash)
    before = await store.count()

    again = await populate(store, shop, hash_password=Passwords(CHEAP).hash)

    assert await store.count() == before
    assert again.accounts["existing"] == 4
    assert again.products["existing"] == 6
    assert again.orders["existing"] == 8


async def test_an_order_short_of_stock_is_billed_after_a_restock(store: EventStore) -> None:
    shop = make_shop(accounts=2, products=1, orders=6, seed=5, stock=1)

    report = await populate(store, shop, hash_password=Passwords(CHEAP).hash, concurrency=1)

    types = Counter(e.type for e in await _log(store))
    assert types["OrderBilled"] == 6
    assert types["StockAdjusted"] == report.restocks >= 1


async def test_demo_accounts_log_in_with_the_demo_password(store: EventStore) -> None:
    passwords = Passwords(CHEAP)
    shop = make_shop(accounts=1, products=1, orders=0, seed=8)
    await populate(store, shop, hash_password=passwords.hash)

    result = await log_in(
        store,
        LogIn(email=shop.accounts[0].email, password=DEFAULT_PASSWORD),
        Metadata(),
        passwords=passwords,
        limits=LoginLimits(),
    )

    assert result.account_id == shop.accounts[0].account_id


async def test_the_demo_command_populates_the_configured_prefix(
    store: EventStore, prefix: str
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "STREAM_PREFIX": prefix,
        "STREAM_PARTITIONS": str(store.keys.partitions),
        "STREAMSHOP_DEV": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "demo",
        "--accounts",
        "5",
        "--products",
        "5",
        "--orders",
        "5",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)

    assert proc.returncode == 0, err.decode()
    assert "5 created" in out.decode()
    types = Counter(e.type for e in await _log(store))
    assert (types["AccountCreated"], types["ProductCreated"], types["OrderBilled"]) == (5, 5, 5)


def test_the_same_seed_gives_the_same_shop_and_another_seed_another() -> None:
    shop = make_shop(accounts=3, products=4, orders=5, seed=1)

    assert make_shop(accounts=3, products=4, orders=5, seed=1) == shop
    other = make_shop(accounts=3, products=4, orders=5, seed=2)
    assert not {a.account_id for a in shop.accounts} & {a.account_id for a in other.accounts}
    assert not {p.sku for p in shop.products} & {p.sku for p in other.products}
