"""The dashboard's routes over HTTP: who may open it, the feed ticket that stands in for the
``Authorization`` header an ``EventSource`` cannot send, the lag and dead-letter overview,
and the re-drive button's route (the real ``streamshop dlq retry`` underneath)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from litestar.testing import AsyncTestClient

from app.auth import Principal
from app.controllers.dashboard import CSP, TICKET_AUDIENCE, _ticket_key, check_ticket, issue_ticket
from events.store import EventStore
from tests.e2e import admin as new_admin
from tests.e2e import api_fixture, assert_problem, bearer, customer  # noqa: F401
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    eventually,
    pg_database_fixture,
    shop_fixture,
)
from workers.dlq import DeadLetters


async def test_the_page_and_its_assets_load_without_a_token_under_a_same_origin_policy(
    api: AsyncTestClient[Any],
) -> None:
    page = await api.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert 'id="login"' in page.text
    for asset in ("dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js"):
        resp = await api.get(f"/dashboard/assets/{asset}")
        assert resp.status_code == 200, asset
    assert "http://" not in page.text and "https://" not in page.text


async def test_a_customer_gets_no_overview_and_no_feed_ticket(api: AsyncTestClient[Any]) -> None:
    _, headers = await customer(api)
    assert_problem(await api.get("/dashboard/overview", headers=headers), 403)
    assert_problem(await api.post("/dashboard/feed-ticket", headers=headers), 403)
    assert_problem(await api.post("/dashboard/dead-letters/redrive", headers=headers), 403)


async def test_the_feed_takes_a_ticket_and_refuses_an_access_token_or_a_forged_one(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    headers = await new_admin(api, store)
    resp = await api.post("/dashboard/feed-ticket", headers=headers)
    assert resp.status_code == 201, resp.text
    ticket = resp.json()["ticket"]
    assert resp.json()["expires_in"] == 60

    access_token = headers["Authorization"].removeprefix("Bearer ")
    assert_problem(await api.get("/dashboard/feed", params={"ticket": access_token}), 401)
    assert_problem(await api.get("/dashboard/feed", params={"ticket": ticket[:-2] + "xx"}), 401)
    # Nor does a ticket open anything else: it is no access token.
    assert_problem(await api.get("/dashboard/overview", headers=bearer(ticket)), 401)
    assert_problem(await api.get("/dashboard/feed"), 400)


async def test_an_expired_or_customer_ticket_opens_no_feed(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    settings = api.app.state.settings
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "aud": TICKET_AUDIENCE, "role": "admin", "iat": now - 70}
    expired = jwt.encode({**claims, "exp": now - 5}, _ticket_key(settings), "HS256")
    assert_problem(await api.get("/dashboard/feed", params={"ticket": expired}), 401)
    # The same ticket with a future expiry is good, so the 401 above was the expiry.
    valid = jwt.encode({**claims, "exp": now + 60}, _ticket_key(settings), "HS256")
    assert check_ticket(settings, valid).role == "admin"
    customer_ticket = issue_ticket(settings, Principal(account_id="x", role="customer"))
    assert_problem(await api.get("/dashboard/feed", params={"ticket": customer_ticket}), 403)


async def test_a_dead_letter_shows_in_the_overview_and_the_button_redrives_it(
    shop: Shop,
) -> None:
    headers = await new_admin(shop.api, shop.store)
    await eventually(lambda: _has_entries(shop), 30, "the admin's sign-up in the log")
    partition, entry_id, fields = await _first_entry(shop)
    dead = DeadLetters(shop.store.redis, shop.store.keys)
    await dead.put("read_models", partition, entry_id, fields, "test: parked by hand", 1)

    overview = await shop.api.get("/dashboard/overview", headers=headers)
    assert overview.status_code == 200, overview.text
    views = {row["projection"]: row for row in overview.json()["projections"]}
    assert views["read_models"]["dead_letters"] == 1, views

    resp = await shop.api.post("/dashboard/dead-letters/redrive", headers=headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["ok"] is True and body["redriven"] == 1 and body["failed"] == 0, body
    assert await dead.count("read_models") == 0

    overview = await shop.api.get("/dashboard/overview", headers=headers)
    views = {row["projection"]: row for row in overview.json()["projections"]}
    assert views["read_models"]["dead_letters"] == 0, views


async def _has_entries(shop: Shop) -> bool:
    return any(e for e in (await shop.store.heads()).values())


async def _first_entry(shop: Shop) -> tuple[int, str, dict[bytes, bytes]]:
    for partition in range(shop.store.keys.partitions):
        rows = await shop.store.redis.xrange(shop.store.keys.log(partition), count=1)
        if rows:
            raw_id, fields = rows[0]
            return partition, raw_id.decode(), fields
    raise AssertionError("the log is empty")
