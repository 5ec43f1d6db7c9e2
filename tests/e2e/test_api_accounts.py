"""Sign-up and login over HTTP against the real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
from litestar.testing import AsyncTestClient

from events.store import EventStore
from tests.e2e import (
    PASSWORD,
    TEST_JWT_SECRET,
    api_fixture,  # noqa: F401
    assert_problem,
    events_of_type,
    new_email,
    sign_up,
)
from tests.support.cluster import single_and_cluster

pytestmark = single_and_cluster


async def test_sign_up_returns_the_account_id_and_a_position(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    resp = await api.post(
        "/accounts", json={"name": "Ana", "email": " Ana.Silva@Example.COM ", "password": PASSWORD}
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"account_id", "position"}
    [created] = await events_of_type(store, "AccountCreated")
    assert created.event.account_id == body["account_id"]
    assert "ana" not in created.event.email.lower()  # sealed with the account's key
    opener = await store.personal.opener([body["account_id"]])
    assert opener.open(body["account_id"], "email", created.event.email) == "ana.silva@example.com"
    assert created.event.email_digest == store.keys.email_digest("ana.silva@example.com")
    assert created.event.password_hash.startswith("$argon2id$")
    assert PASSWORD not in created.event.password_hash


async def test_second_sign_up_with_same_email_is_rejected(api: AsyncTestClient[Any]) -> None:
    _, email = await sign_up(api)
    resp = await api.post(
        "/accounts", json={"name": "Bia", "email": email.upper(), "password": PASSWORD}
    )
    body = assert_problem(resp, 409, "duplicate-email")
    assert body["field"] == "email"


async def test_twenty_parallel_sign_ups_with_one_email_make_exactly_one_account(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    email = new_email()
    responses = await asyncio.gather(
        *(
            api.post("/accounts", json={"name": f"N{i}", "email": email, "password": PASSWORD})
            for i in range(20)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19
    assert len(await events_of_type(store, "AccountCreated")) == 1


async def test_login_works_the_moment_sign_up_returns(api: AsyncTestClient[Any]) -> None:
    account_id, email = await sign_up(api)
    resp = await api.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
        "account_id",
        "position",
    }
    assert body["token_type"] == "bearer"
    assert body["account_id"] == account_id
    assert body["expires_in"] > 0
    claims = jwt.decode(body["access_token"], TEST_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == account_id
    assert claims["role"] == "customer"
    assert claims["exp"] > claims["iat"]


async def test_unknown_email_and_wrong_password_get_the_same_answer(
    api: AsyncTestClient[Any],
) -> None:
    _, email = await sign_up(api)
    wrong = await api.post("/auth/login", json={"email": email, "password": "not the one"})
    unknown = await api.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
    a = assert_problem(wrong, 401, "invalid-credentials")
    b = assert_problem(unknown, 401, "invalid-credentials")
    assert a == b


async def test_every_login_attempt_is_recorded_and_unknown_emails_only_by_digest(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, email = await sign_up(api)
    stranger = new_email()
    await api.post("/auth/login", json={"email": email, "password": PASSWORD})
    await api.post("/auth/login", json={"email": email, "password": "nope-nope"})
    await api.post("/auth/login", json={"email": stranger, "password": PASSWORD})
    [ok] = await events_of_type(store, "LoginSucceeded")
    failed = await events_of_type(store, "LoginFailed")
    assert ok.event.account_id == account_id
    assert sorted(f.event.reason for f in failed) == ["unknown_email", "wrong_password"]
    unknown = next(f for f in failed if f.event.reason == "unknown_email")
    assert unknown.event.email_digest == store.keys.email_digest(stranger)
    assert unknown.aggregate == f"login:{store.keys.email_digest(stranger)}"
    raw = [fields async for _, fields in _raw_entries(store)]
    assert not any(stranger.encode() in value for entry in raw for value in entry.values())


async def _raw_entries(store: EventStore):  # type: ignore[no-untyped-def]
    for p in range(store.keys.partitions):
        for entry in await store.read_raw(p):
            yield entry


async def test_five_failures_lock_login_with_retry_after(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    _, email = await sign_up(api)
    for _ in range(5):
        resp = await api.post("/auth/login", json={"email": email, "password": "wrong-pass"})
        assert_problem(resp, 401)
    locked = await api.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(locked, 429, "rate-limited")
    assert 0 < int(locked.headers["retry-after"]) <= 900
    reasons = [e.event.reason for e in await events_of_type(store, "LoginFailed")]
    assert reasons.count("wrong_password") == 5
    assert reasons.count("rate_limited") == 1
    assert await events_of_type(store, "LoginSucceeded") == []


async def test_a_success_clears_earlier_failures(api: AsyncTestClient[Any]) -> None:
    _, email = await sign_up(api)
    for _ in range(4):
        await api.post("/auth/login", json={"email": email, "password": "wrong-pass"})
    ok = await api.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert ok.status_code == 200
    for _ in range(4):
        resp = await api.post("/auth/login", json={"email": email, "password": "wrong-pass"})
        assert_problem(resp, 401)
