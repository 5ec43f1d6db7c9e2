"""HTTP → log → projector → PostgreSQL audit log → HTTP and CLI: one row per event, no
secrets, append-only in the database, tampering found and named."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from typing import Any

import asyncpg
import pytest

from app.queries.audit import SORT
from app.queries.cursors import encode_cursor
from tests.e2e import PASSWORD, assert_problem, create_product, customer, sign_up
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    admin_headers,
    fresh,
    last_position,
    pg_database_fixture,
    shop_fixture,
)


async def activity(shop: Shop) -> dict[str, Any]:
    admin = await admin_headers(shop)
    product_id = await create_product(shop.api, admin)
    account_id, headers = await customer(shop.api)
    billed = await shop.api.post(
        "/orders", json={"lines": [{"product_id": product_id, "quantity": 2}]}, headers=headers
    )
    _, email = await sign_up(shop.api)
    await shop.api.post("/auth/login", json={"email": email, "password": "not the password"})
    return {
        "admin": admin,
        "account_id": account_id,
        "order_id": billed.json()["order_id"],
        "position": await last_position(shop),
    }


async def all_rows(shop: Shop, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        page = fresh(await shop.api.get("/audit", params=query, headers=headers)).json()
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


async def test_one_row_per_event_without_secrets(shop: Shop) -> None:
    act = await activity(shop)
    rows = await all_rows(shop, act["admin"], limit=3, min_position=act["position"])
    events = await shop.events()
    assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in events)
    assert len(rows) == len(events)
    assert [r["occurred_at"] for r in rows] == sorted(
        (r["occurred_at"] for r in rows), reverse=True
    )
    text = str(rows)
    assert "password_hash" not in text and "argon2" not in text and PASSWORD not in text
    raw = await shop.pool.fetchval("SELECT string_agg(payload::text, '') FROM audit.events")
    assert "argon2" not in raw

    failed = await all_rows(shop, act["admin"], type="LoginFailed")
    assert [r["type"] for r in failed] == ["LoginFailed"]
    order = await all_rows(shop, act["admin"], aggregate=f"order:{act['order_id']}")
    assert [r["type"] for r in order] == ["OrderBilled"]
    mine = await all_rows(shop, act["admin"], actor=f"account:{act['account_id']}")
    assert {r["event_id"] for r in mine} == {
        e.id for e in events if e.actor == f"account:{act['account_id']}"
    }
    assert mine


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit.events SET actor = 'mallory'",
        "DELETE FROM audit.events WHERE type = 'OrderBilled'",
        "TRUNCATE audit.events",
    ],
)
async def test_postgres_refuses_to_change_the_audit_log(shop: Shop, statement: str) -> None:
    act = await activity(shop)
    await all_rows(shop, act["admin"], min_position=act["position"])
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await shop.pool.execute(statement)
    assert await shop.pool.fetchval("SELECT count(*) FROM audit.events") == len(await shop.events())


async def streamshop(shop: Shop, *args: str) -> tuple[int, str]:
    env = dict(os.environ, DATABASE_URL=shop.settings.postgres.url, LOG_FORMAT="console")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_a_row_altered_by_hand_is_named_by_verify(shop: Shop) -> None:
    act = await activity(shop)
    await all_rows(shop, act["admin"], min_position=act["position"])
    ok = (await shop.api.get("/audit/verify", headers=act["admin"])).json()
    assert ok["ok"] is True and ok["breaks"] == []

    async with shop.pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
        row = await conn.fetchrow(
            "UPDATE audit.events SET actor = 'mallory' WHERE aggregate = $1"
            " RETURNING partition, n, event_id",
            f"order:{act['order_id']}",
        )
        await conn.execute("ALTER TABLE audit.events ENABLE TRIGGER events_append_only")

    report = (await shop.api.get("/audit/verify", headers=act["admin"])).json()
    assert report["ok"] is False
    assert [(b["partition"], b["n"], b["event_id"]) for b in report["breaks"]] == [
        (row["partition"], row["n"], row["event_id"])
    ]
    code, out = await streamshop(shop, "audit", "verify")
    assert code == 1, out
    assert f"partition {row['partition']} row n={row['n']}" in out
    assert row["event_id"] in out


async def test_customers_cannot_read_the_audit_log(shop: Shop) -> None:
    _, headers = await customer(shop.api)
    assert_problem(await shop.api.get("/audit", headers=headers), 403)
    assert_problem(await shop.api.get("/audit/verify", headers=headers), 403)
    assert_problem(await shop.api.get("/audit"), 401)


@pytest.mark.parametrize("param", ["actor", "type", "aggregate"])
async def test_a_nul_in_a_filter_is_a_400_naming_it(shop: Shop, param: str) -> None:
    """PostgreSQL ``text`` cannot hold NUL: such a filter is refused, never a 500."""
    admin = await admin_headers(shop)
    resp = await shop.api.get("/audit", params={param: "Product\x00Created"}, headers=admin)
    problem = assert_problem(resp, 400, "validation-error")
    assert problem["field"] == param, problem
    assert problem["invalid-params"][0]["name"] == param
    assert "NUL" in problem["detail"]


async def test_a_cursor_naming_a_nul_id_is_a_400_naming_it(shop: Shop) -> None:
    admin = await admin_headers(shop)
    cursor = encode_cursor(SORT, dt.datetime.now(dt.UTC), "event\x00id")
    resp = await shop.api.get("/audit", params={"cursor": cursor}, headers=admin)
    assert assert_problem(resp, 400, "validation-error")["field"] == "cursor"
