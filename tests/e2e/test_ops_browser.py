"""The dashboard and ``/docs`` in a real headless Chromium (Debian's ``chromium``, driven over
the DevTools protocol): an admin logs in, the sales chart, the top products and the funnel
render from the warehouse, a new order appears in the live feed, and no page asks another
host for anything. Screenshots go to ``tests/artifacts/`` (CI keeps them).

``make test`` installs Chromium when it is missing and it may (root with apt-get); where it
cannot, these tests skip and say so.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.commands import execute
from app.commands.accounts import SignUp
from app.passwords import Passwords
from events.store import EventStore, Metadata
from tests.e2e import PASSWORD, TEST_AUTH, bearer, create_product, customer, log_in
from tests.e2e.test_ops_support import live_api
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    eventually,
    pg_database_fixture,
    shop_fixture,
)
from tests.support.browser import chromium, find_chromium

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = find_chromium()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install -y chromium, or set CHROMIUM=/path); "
    "make test installs it when run as root",
)


def live_env(shop: Shop) -> dict[str, str]:
    s = shop.settings
    return {"MONGO_URL": s.mongo.url, "MONGO_DB": s.mongo.database, "DATABASE_URL": s.postgres.url}


async def new_admin(shop: Shop) -> tuple[str, dict[str, str]]:
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    password_hash = await Passwords(TEST_AUTH).hash(PASSWORD)
    command = SignUp(email=email, name="Admin", password_hash=password_hash, role="admin")
    await execute(shop.store, command, Metadata(actor="test"))
    return email, bearer(await log_in(shop.api, email))


async def bill(shop: Shop, headers: dict[str, str], product_id: str, quantity: int) -> str:
    body = {"lines": [{"product_id": product_id, "quantity": quantity}]}
    resp = await shop.api.post("/orders", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["order_id"])


def foreign(requests: list[str], base: str) -> list[str]:
    """Requests to any host but the API's (``data:`` and ``about:`` stay in the page)."""
    own = urlsplit(base).netloc
    return [
        url
        for url in requests
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).netloc != own
    ]


async def test_admin_sees_sales_top_products_and_a_new_order_live(shop: Shop) -> None:
    assert CHROMIUM is not None
    email, admin_headers = await new_admin(shop)
    name = f"Caneca {uuid.uuid4().hex[:6]}"
    product = await create_product(shop.api, admin_headers, name=name, stock=100)
    _, buyer = await customer(shop.api)
    await bill(shop, buyer, product, 3)

    async def sold() -> bool:
        resp = await shop.api.get("/analytics/top-products", headers=admin_headers)
        return resp.status_code == 200 and any(p["name"] == name for p in resp.json())

    await eventually(sold, 60, "the warehouse to show the first order")

    with live_api(shop.store.keys.prefix, shop.store.keys.partitions, **live_env(shop)) as base:
        async with chromium(CHROMIUM) as page:
            await page.goto(f"{base}/dashboard")
            await page.eval(
                f"document.getElementById('email').value = {json.dumps(email)};"
                f"document.getElementById('password').value = {json.dumps(PASSWORD)};"
                "document.getElementById('login').requestSubmit(); true"
            )
            await page.wait_for(
                "!document.getElementById('panels').hidden", what="the panels after login"
            )
            await page.wait_for(
                "document.querySelector('#sales-chart canvas') !== null"
                " && Number(document.getElementById('sales-chart').dataset.points) > 0",
                what="the sales chart with a point",
            )
            rows = await page.wait_for(
                "Array.from(document.querySelectorAll('#top-products tbody tr'))"
                ".map(tr => tr.textContent).filter(t => t.length)",
                what="the top products",
            )
            assert any(name in row for row in rows), rows
            funnel = await page.eval("document.getElementById('funnel').textContent")
            assert "paid" in funnel and "checkouts" in funnel, funnel
            await page.wait_for(
                "document.getElementById('feed-state').textContent === 'live'",
                what="the live feed to open",
            )

            order_id = await bill(shop, buyer, product, 1)
            await page.wait_for(
                "Array.from(document.querySelectorAll('#live-orders li'))"
                f".some(li => li.textContent.includes({json.dumps(order_id)}))",
                what="the new order in the live feed",
            )
            await page.wait_for(
                "document.querySelectorAll('#projections tbody tr').length > 0",
                what="the projections' lag",
            )
            await page.screenshot(ARTIFACTS / "dashboard.png")
            assert not foreign(page.requests, base), page.requests
            assert (ARTIFACTS / "dashboard.png").stat().st_size > 0


async def test_docs_render_with_nothing_from_another_host(store: EventStore) -> None:
    assert CHROMIUM is not None
    with live_api(store.keys.prefix, store.keys.partitions) as base:
        async with chromium(CHROMIUM) as page:
            await page.goto(f"{base}/docs")
            await page.wait_for(
                "document.querySelectorAll('.swagger-ui .opblock').length > 10",
                what="Swagger UI to list the operations",
            )
            await page.screenshot(ARTIFACTS / "docs.png")
            assert page.requests, "the page made no request at all"
            assert not foreign(page.requests, base), page.requests
