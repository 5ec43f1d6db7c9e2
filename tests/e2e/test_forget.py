"""Forgetting a customer for real (crypto-shredding), end to end on the real servers.

Sign up, change the profile, order, forget, rebuild every view: then neither the email nor
the names nor the address are anywhere in Redis (keys and values, the log included),
MongoDB or a ``pg_dump`` of the database; the audit chain verifies, the sales are the
same, every view says "forgotten", and the address can sign up again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from typing import Any

from projections.audit import verify_chains
from tests.e2e import PASSWORD, admin, assert_problem, bearer, create_product, log_in
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    fresh,
    last_position,
    pg_database_fixture,
    shop_fixture,
)
from tests.support.cluster import single_and_cluster
from tests.support.personal_scan import leaks, mongo_dump, pg_dump, redis_dump
from workers.rebuild import RebuildOptions, rebuild_views
from workers.verify import verify_view
from workers.views import VIEWS, ViewPointers


def _someone() -> dict[str, str]:
    """Personal data no other test uses, so a scan cannot be fooled by another account."""
    tag = uuid.uuid4().hex[:10]
    return {
        "email": f"zuleica.{tag}@example.com",
        "name": f"Zuleica Esquecida {tag}",
        "new_name": f"Zuleica Renomeada {tag}",
        "street": f"Travessa Sigilosa {tag}",
    }


async def sales(shop: Shop, headers: dict[str, str]) -> list[Any]:
    position = await last_position(shop)
    resp = await shop.api.get(
        "/analytics/sales", params={"min_position": position}, headers=headers
    )
    return list(fresh(resp).json())


async def account_view(shop: Shop, headers: dict[str, str], account_id: str) -> dict[str, Any]:
    position = await last_position(shop)
    resp = await shop.api.get(
        f"/accounts/{account_id}", params={"min_position": position}, headers=headers
    )
    return dict(fresh(resp).json())


async def test_a_forgotten_customer_leaves_no_personal_data_after_every_view_is_rebuilt(
    shop: Shop,
) -> None:
    api, person = shop.api, _someone()
    admin_headers = await admin(api, shop.store)
    mug = await create_product(api, admin_headers, price=1250)
    signed = await api.post(
        "/accounts", json={"email": person["email"], "name": person["name"], "password": PASSWORD}
    )
    assert signed.status_code == 201, signed.text
    account_id = signed.json()["account_id"]
    headers = bearer(await log_in(api, person["email"]))
    address = {"line1": person["street"], "city": "Recife", "postal_code": "50000-000"}
    changed = await api.patch(
        "/accounts/me",
        json={"name": person["new_name"], "shipping_address": address},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    billed = await api.post(
        "/orders", json={"lines": [{"product_id": mug, "quantity": 2}]}, headers=headers
    )
    assert billed.status_code == 201, billed.text
    before = await account_view(shop, admin_headers, account_id)
    assert (before["name"], before["email"]) == (person["new_name"], person["email"])
    sold = await sales(shop, admin_headers)
    assert sum(p["revenue"] for p in sold) == 2500

    wrong = await api.request(
        "DELETE", "/accounts/me", json={"password": "not my password"}, headers=headers
    )
    assert_problem(wrong, 403, "wrong-password")
    forgot = await api.request(
        "DELETE", "/accounts/me", json={"password": PASSWORD}, headers=headers
    )
    assert forgot.status_code == 200, forgot.text

    live = await account_view(shop, admin_headers, account_id)
    assert (live["forgotten"], live["name"], live["email"]) == (True, "", "")
    assert live["shipping_address"] is None and live["orders_count"] == 1

    reports = await rebuild_views(shop.settings, VIEWS, RebuildOptions(batch=100), quiet=True)
    assert [r.view for r in reports] == list(VIEWS)
    rebuilt = await account_view(shop, admin_headers, account_id)
    assert {k: v for k, v in rebuilt.items() if k != "last_login_at"} == {
        k: v for k, v in live.items() if k != "last_login_at"
    }
    assert await sales(shop, admin_headers) == sold
    results = [await verify_view(shop.settings, name) for name in VIEWS]
    assert [(r.view, r.ok) for r in results] == [(name, True) for name in VIEWS]
    pointers = ViewPointers(shop.store.redis, shop.settings.redis.prefix)
    audit = await verify_chains(shop.pool, f"audit_{await pointers.current('audit')}")
    assert audit.ok and audit.rows > 0
    warehouse = f"dw_{await pointers.current('warehouse')}"
    forgotten_rows = await shop.pool.fetch(
        f'SELECT forgotten, email_digest FROM "{warehouse}".dim_account WHERE account_id = $1',
        account_id,
    )
    assert [tuple(r) for r in forgotten_rows] == [(True, "")]

    settings = shop.settings
    assert leaks(await redis_dump(shop.store.redis, settings.redis.prefix), person) == []
    assert leaks(await mongo_dump(settings.mongo.url, settings.mongo.database), person) == []
    assert leaks(await asyncio.to_thread(pg_dump, settings.postgres.url), person) == []

    refused = await api.post("/auth/login", json={"email": person["email"], "password": PASSWORD})
    assert_problem(refused, 401)
    again = await api.post(
        "/accounts", json={"email": person["email"], "name": "Outra", "password": PASSWORD}
    )
    assert again.status_code == 201, again.text
    assert again.json()["account_id"] != account_id
    assert await log_in(api, person["email"])


async def test_an_admin_forgets_a_customer_and_cannot_forget_an_admin(shop: Shop) -> None:
    api, person = shop.api, _someone()
    admin_headers = await admin(api, shop.store)
    signed = await api.post(
        "/accounts", json={"email": person["email"], "name": person["name"], "password": PASSWORD}
    )
    account_id = signed.json()["account_id"]
    customer_headers = bearer(await log_in(api, person["email"]))

    forgot = await api.delete(f"/accounts/{account_id}", headers=admin_headers)
    assert forgot.status_code == 200, forgot.text
    assert_problem(await api.delete(f"/accounts/{account_id}", headers=admin_headers), 404)
    assert_problem(await api.delete(f"/accounts/{account_id}", headers=customer_headers), 403)
    # The customer's unexpired token cannot bring the account back.
    patched = await api.patch("/accounts/me", json={"name": "Back"}, headers=customer_headers)
    assert_problem(patched, 404)
    # The admin's id is the access token's subject (its read model may not be there yet).
    claims = admin_headers["Authorization"].removeprefix("Bearer ").split(".")[1]
    admin_id = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["sub"]
    assert_problem(await api.delete(f"/accounts/{admin_id}", headers=admin_headers), 409)
    view = await account_view(shop, admin_headers, account_id)
    assert (view["forgotten"], view["name"]) == (True, "")


@single_and_cluster
async def test_streamshop_forget_takes_an_email_and_frees_it(shop: Shop) -> None:
    api, person = shop.api, _someone()
    signed = await api.post(
        "/accounts", json={"email": person["email"], "name": person["name"], "password": PASSWORD}
    )
    account_id = signed.json()["account_id"]
    s = shop.settings
    env = {
        **os.environ,
        "REDIS_URL": s.redis.url,
        "REDIS_CLUSTER": "1" if s.redis.cluster else "0",
        "STREAM_PREFIX": s.redis.prefix,
        "STREAM_PARTITIONS": str(s.redis.partitions),
        "LOG_FORMAT": "json",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.cli", "forget", person["email"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert account_id in done.stdout and person["email"] not in done.stdout
    state = await shop.store.state(f"account:{account_id}")
    assert state["forgotten"] == "1" and state["email"] == state["name"] == ""
    assert await shop.store.redis.hget(s.redis.keys.personal_keys(), account_id) is None
    again = await api.post(
        "/accounts", json={"email": person["email"], "name": "Outra", "password": PASSWORD}
    )
    assert again.status_code == 201, again.text
