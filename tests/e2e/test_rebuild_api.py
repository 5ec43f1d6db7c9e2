"""Rebuilding every view with the real ``streamshop rebuild`` process while orders keep
coming in and a client keeps reading the query API: no response fails, no view shrinks or
goes back in time, and afterwards every view equals the log."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from app.commands import execute
from app.commands.billing import BillLine, BillOrder
from events.positions import parse_position, parse_stream_id
from events.store import Metadata
from tests.e2e import admin, create_product, customer
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    eventually,
    pg_database_fixture,
    shop_fixture,
)
from workers.verify import verify_view
from workers.views import VIEWS, ViewPointers

ROOT = Path(__file__).resolve().parents[2]
FIRST_ORDERS = 50


def cli_env(shop: Shop) -> dict[str, str]:
    s = shop.settings
    return {
        **os.environ,
        "REDIS_URL": s.redis.url,
        "STREAM_PREFIX": s.redis.prefix,
        "STREAM_PARTITIONS": str(s.redis.partitions),
        "MONGO_URL": s.mongo.url,
        "MONGO_DB": s.mongo.database,
        "DATABASE_URL": s.postgres.url,
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }


class Monotonic:
    """What one endpoint showed over time: a size and the view's position per partition."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.size = -1
        self.position: dict[int, tuple[int, int]] = {}
        self.reads = 0

    def saw(self, resp: httpx.Response, size: int) -> None:
        assert resp.status_code == 200, (self.what, resp.status_code, resp.text)
        assert size >= self.size, f"{self.what} shrank from {self.size} to {size}"
        token = resp.headers.get("x-view-position", "")
        for p, entry in (parse_position(token) if token else {}).items():
            now = parse_stream_id(entry)
            assert now >= self.position.get(p, (0, 0)), f"{self.what} went back on p{p}"
            self.position[p] = now
        self.size = size
        self.reads += 1


async def test_rebuild_all_under_load_keeps_the_api_serving_and_views_equal_the_log(
    shop: Shop,
) -> None:
    api = shop.api
    admin_headers = await admin(api, shop.store)
    products = [await create_product(api, admin_headers, stock=500) for _ in range(3)]
    account_id, headers = await customer(api)
    meta = Metadata(actor=f"account:{account_id}")

    async def order(i: int) -> None:
        line = BillLine(product_id=products[i % len(products)], quantity=1 + i % 2)
        await execute(shop.store, BillOrder(account_id=account_id, lines=[line]), meta)

    for i in range(FIRST_ORDERS):
        await order(i)
    pointers = ViewPointers(shop.store.redis, shop.settings.redis.prefix)
    before = await pointers.currents()

    seen = {name: Monotonic(name) for name in ("products", "orders", "sales", "audit", "account")}

    async def read_everything() -> None:
        resp = await api.get("/products", params={"limit": 100})
        seen["products"].saw(resp, len(resp.json()["items"]))
        resp = await api.get("/orders", params={"limit": 100}, headers=headers)
        seen["orders"].saw(resp, len(resp.json()["items"]))
        resp = await api.get("/accounts/me", headers=headers)
        seen["account"].saw(resp, resp.json()["orders_count"])
        resp = await api.get("/analytics/sales", headers=admin_headers)
        seen["sales"].saw(resp, sum(row["orders"] for row in resp.json()))
        resp = await api.get("/audit/", params={"limit": 100}, headers=admin_headers)
        seen["audit"].saw(resp, len(resp.json()["items"]))

    async def settled() -> bool:
        me = await api.get("/accounts/me", headers=headers)
        audit = await api.get("/audit/", params={"limit": 100}, headers=admin_headers)
        logged = min(await shop.store.count(), 100)
        return (
            me.status_code == 200
            and me.json()["orders_count"] == FIRST_ORDERS
            and len(audit.json()["items"]) == logged
        )

    await eventually(settled, within=180, what="the live views to show the first orders")
    await read_everything()

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "workers.cli", "rebuild", "all", "--batch", "10"),
        cwd=ROOT,
        env=cli_env(shop),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    i = FIRST_ORDERS
    while proc.returncode is None:
        await order(i)
        i += 1
        await read_everything()
        try:
            await asyncio.wait_for(proc.wait(), 0.05)
        except TimeoutError:
            pass
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    for name in VIEWS:
        assert f"{name}: now on version" in out.decode()

    after = await pointers.currents()
    assert all(after[name] != before[name] for name in VIEWS), (before, after)
    assert all(m.reads >= 5 for m in seen.values()), {k: m.reads for k, m in seen.items()}
    assert i > FIRST_ORDERS + 3  # orders kept being billed during the rebuild

    async def all_orders_shown() -> bool:
        await read_everything()
        return seen["orders"].size == i and seen["account"].size == i

    await eventually(all_orders_shown, within=180, what="every order in the rebuilt views")
    results: list[Any] = [await verify_view(shop.settings, name) for name in VIEWS]
    assert [(r.view, r.ok, r.differences) for r in results] == [(name, True, []) for name in VIEWS]
