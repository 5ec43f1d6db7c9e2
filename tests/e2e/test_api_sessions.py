"""Sessions over HTTP against the real Redis: refresh rotation, reuse detection, logout,
deactivation, and the per-client rate limit on the credential routes."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
from litestar.testing import AsyncTestClient

from events.store import EventStore
from tests.e2e import (
    PASSWORD,
    TEST_JWT_SECRET,
    admin,
    api_fixture,  # noqa: F401
    assert_problem,
    bearer,
    new_email,
    sign_up,
)


async def login(api: AsyncTestClient[Any], email: str, password: str = PASSWORD) -> dict[str, Any]:
    resp = await api.post("/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def refresh(api: AsyncTestClient[Any], token: str) -> Any:
    return await api.post("/auth/refresh", json={"refresh_token": token})


async def test_login_returns_a_15_minute_access_token_and_a_refresh_token(
    api: AsyncTestClient[Any],
) -> None:
    account_id, email = await sign_up(api)
    body = await login(api, email)
    assert body["expires_in"] == 900
    assert body["refresh_token"] and body["refresh_expires_in"] > body["expires_in"]
    claims = jwt.decode(body["access_token"], TEST_JWT_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["exp"] - claims["iat"]) == (account_id, 900)


async def test_refresh_rotates_the_refresh_token_and_issues_a_working_access_token(
    api: AsyncTestClient[Any],
) -> None:
    account_id, email = await sign_up(api)
    first = (await login(api, email))["refresh_token"]
    resp = await refresh(api, first)
    assert resp.status_code == 200, resp.text
    second = resp.json()["refresh_token"]
    assert second != first
    assert resp.json()["account_id"] == account_id
    headers = bearer(resp.json()["access_token"])
    changed = await api.patch("/accounts/me", json={"name": "Renewed"}, headers=headers)
    assert changed.status_code == 200, changed.text
    again = await refresh(api, second)
    assert again.status_code == 200, again.text


async def test_reusing_a_rotated_refresh_token_revokes_every_token_of_that_login(
    api: AsyncTestClient[Any],
) -> None:
    _, email = await sign_up(api)
    first = (await login(api, email))["refresh_token"]
    other_login = (await login(api, email))["refresh_token"]
    second = (await refresh(api, first)).json()["refresh_token"]

    assert_problem(await refresh(api, first), 401, "invalid-refresh-token")
    assert_problem(await refresh(api, second), 401, "invalid-refresh-token")
    assert (await refresh(api, other_login)).status_code == 200


async def test_logout_revokes_the_session(api: AsyncTestClient[Any]) -> None:
    _, email = await sign_up(api)
    first = (await login(api, email))["refresh_token"]
    second = (await refresh(api, first)).json()["refresh_token"]
    resp = await api.post("/auth/logout", json={"refresh_token": second})
    assert resp.status_code == 204, resp.text
    assert_problem(await refresh(api, second), 401, "invalid-refresh-token")


async def test_a_made_up_refresh_token_is_401(api: AsyncTestClient[Any]) -> None:
    for token in ("nonsense", "abc.def", "."):
        assert_problem(await refresh(api, token), 401, "invalid-refresh-token")


async def test_redis_holds_refresh_tokens_only_hashed(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    _, email = await sign_up(api)
    token = (await login(api, email))["refresh_token"]
    secret = token.partition(".")[2].encode()
    prefix = store.keys.prefix
    found = []
    async for key in store.redis.scan_iter(match=f"{prefix}:session:*"):
        found.append(key)
        values = await store.redis.hvals(key)
        assert not any(secret in value for value in values)
    assert len(found) == 1


async def test_a_deactivated_account_can_neither_log_in_nor_refresh(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, email = await sign_up(api)
    token = (await login(api, email))["refresh_token"]
    admin_headers = await admin(api, store)
    resp = await api.post(f"/accounts/{account_id}/deactivate", headers=admin_headers)
    assert resp.status_code == 200, resp.text

    refused = await api.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(refused, 403, "account-deactivated")
    wrong = await api.post("/auth/login", json={"email": email, "password": "not-the-one"})
    assert_problem(wrong, 401, "invalid-credentials")
    assert_problem(await refresh(api, token), 401, "invalid-refresh-token")

    resp = await api.post(f"/accounts/{account_id}/reactivate", headers=admin_headers)
    assert resp.status_code == 200, resp.text
    assert (await login(api, email))["account_id"] == account_id
    assert_problem(await refresh(api, token), 401, "invalid-refresh-token")


async def test_a_burst_of_logins_for_different_emails_from_one_client_gets_429(
    api: AsyncTestClient[Any],
) -> None:
    statuses = []
    for _ in range(20):
        resp = await api.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
        statuses.append(resp.status_code)
    assert statuses == [401] * 20
    resp = await api.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
    assert_problem(resp, 429)
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    legacy = await api.post("/login", json={"email": new_email(), "senha": PASSWORD})
    assert_problem(legacy, 429)
    assert "retry-after" in legacy.headers


async def test_the_refresh_budget_is_apart_from_the_login_budget(
    api: AsyncTestClient[Any],
) -> None:
    for _ in range(21):
        await api.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
    assert_problem(await refresh(api, "abc.def"), 401, "invalid-refresh-token")


async def test_parallel_refreshes_of_one_token_rotate_it_once_and_revoke_the_session(
    api: AsyncTestClient[Any],
) -> None:
    _, email = await sign_up(api)
    token = (await login(api, email))["refresh_token"]
    responses = await asyncio.gather(*(refresh(api, token) for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * 9
    [winner] = [r for r in responses if r.status_code == 200]
    assert_problem(await refresh(api, winner.json()["refresh_token"]), 401)
