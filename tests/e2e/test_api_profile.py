"""A customer's profile and password, and an admin's (de)activation, over HTTP against the
real Redis (write side only; the read side's account views are in test_views_accounts)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.testing import AsyncTestClient

from events.states import AccountState
from events.store import EventStore
from tests.e2e import (
    PASSWORD,
    admin,
    api_fixture,  # noqa: F401
    assert_problem,
    bearer,
    customer,
    events_of_type,
    sign_up,
)

ADDRESS = {"line1": "Rua das Flores, 12", "city": "Recife", "postal_code": "50000-000"}
NEW_PASSWORD = "a brand new passphrase"


async def account_state(store: EventStore, account_id: str) -> AccountState:
    aggregate = f"account:{account_id}"
    state = (await store.load([aggregate]))[aggregate]
    assert isinstance(state, AccountState)
    return state


async def test_profile_update_records_the_name_and_shipping_address(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, headers = await customer(api)
    resp = await api.patch(
        "/accounts/me", json={"name": "Ana Maria", "shipping_address": ADDRESS}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"account_id", "position"}
    [changed] = await events_of_type(store, "AccountProfileChanged")
    e = changed.event
    assert e.account_id == account_id
    assert "Ana" not in e.name and "Recife" not in e.shipping_address  # sealed
    opener = await store.personal.opener([account_id])
    assert opener.open(account_id, "name", e.name) == "Ana Maria"
    address = msgspec.json.decode(opener.open(account_id, "shipping_address", e.shipping_address))
    assert (address["city"], address["country"]) == ("Recife", "BR")
    state_name = (await account_state(store, account_id)).name
    assert opener.open(account_id, "name", state_name) == "Ana Maria"


async def test_an_empty_profile_update_is_refused(api: AsyncTestClient[Any]) -> None:
    _, headers = await customer(api)
    assert_problem(await api.patch("/accounts/me", json={}, headers=headers), 422, "empty-update")


async def test_a_profile_field_out_of_bounds_is_a_400_naming_it(api: AsyncTestClient[Any]) -> None:
    _, headers = await customer(api)
    body = {"shipping_address": {**ADDRESS, "country": "Brazil"}}
    problem = assert_problem(await api.patch("/accounts/me", json=body, headers=headers), 400)
    assert "country" in problem["field"]


async def test_after_a_password_change_the_old_password_fails_and_the_new_one_works(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, email = await sign_up(api)
    headers = bearer((await _login(api, email, PASSWORD)).json()["access_token"])
    resp = await api.post(
        "/accounts/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    assert "argon2" not in resp.text
    assert_problem(await _login(api, email, PASSWORD), 401, "invalid-credentials")
    assert (await _login(api, email, NEW_PASSWORD)).json()["account_id"] == account_id
    [changed] = await events_of_type(store, "PasswordChanged")
    assert changed.event.password_hash.startswith("$argon2id$")
    assert NEW_PASSWORD not in changed.event.password_hash


async def test_a_wrong_current_password_changes_nothing(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    _, email = await sign_up(api)
    headers = bearer((await _login(api, email, PASSWORD)).json()["access_token"])
    resp = await api.post(
        "/accounts/me/password",
        json={"current_password": "not the password", "new_password": NEW_PASSWORD},
        headers=headers,
    )
    problem = assert_problem(resp, 403, "wrong-password")
    assert problem["field"] == "current_password"
    assert await events_of_type(store, "PasswordChanged") == []
    assert (await _login(api, email, PASSWORD)).status_code == 200


async def test_a_password_change_ends_the_sessions_opened_before_it(
    api: AsyncTestClient[Any],
) -> None:
    _, email = await sign_up(api)
    session = (await _login(api, email, PASSWORD)).json()
    await api.post(
        "/accounts/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(session["access_token"]),
    )
    resp = await api.post("/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert_problem(resp, 401, "invalid-refresh-token")
    fresh = (await _login(api, email, NEW_PASSWORD)).json()["refresh_token"]
    assert (await api.post("/auth/refresh", json={"refresh_token": fresh})).status_code == 200


async def test_deactivation_is_recorded_and_cannot_be_repeated(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, _ = await sign_up(api)
    headers = await admin(api, store)
    path = f"/accounts/{account_id}/deactivate"
    resp = await api.post(path, json={"reason": "chargeback"}, headers=headers)
    assert resp.status_code == 200, resp.text
    assert not (await account_state(store, account_id)).active
    assert_problem(await api.post(path, headers=headers), 409, "activation-unchanged")
    [event] = await events_of_type(store, "AccountDeactivated")
    assert event.event.reason == "chargeback"
    await api.post(f"/accounts/{account_id}/reactivate", headers=headers)
    assert (await account_state(store, account_id)).active


async def test_a_deactivated_customer_cannot_change_their_profile(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, headers = await customer(api)
    await api.post(f"/accounts/{account_id}/deactivate", headers=await admin(api, store))
    resp = await api.patch("/accounts/me", json={"name": "Still me"}, headers=headers)
    assert_problem(resp, 403, "account-deactivated")


async def test_deactivating_an_unknown_account_is_404(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    headers = await admin(api, store)
    resp = await api.post("/accounts/no-such-account/deactivate", headers=headers)
    assert_problem(resp, 404, "account-not-found")


async def test_only_an_admin_may_deactivate(api: AsyncTestClient[Any]) -> None:
    account_id, headers = await customer(api)
    resp = await api.post(f"/accounts/{account_id}/deactivate", headers=headers)
    assert_problem(resp, 403)


async def _login(api: AsyncTestClient[Any], email: str, password: str) -> Any:
    return await api.post("/auth/login", json={"email": email, "password": password})
