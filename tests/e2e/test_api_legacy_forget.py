"""The legacy ``/clientes`` aliases of forgetting (``DELETE /accounts/me`` and
``DELETE /accounts/{id}``): Portuguese field names over the very same command."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from events.store import EventStore
from tests.e2e import (
    PASSWORD,
    admin,
    api_fixture,  # noqa: F401
    assert_problem,
    customer,
    events_of_type,
    sign_up,
)


async def test_a_customer_forgets_itself_through_the_legacy_alias(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, headers = await customer(api)

    wrong = await api.request(
        "DELETE", "/clientes/me", json={"senha": "nope-nope"}, headers=headers
    )
    ok = await api.request("DELETE", "/clientes/me", json={"senha": PASSWORD}, headers=headers)

    assert assert_problem(wrong, 403, "wrong-password")["field"] == "senha"
    assert ok.status_code == 200, ok.text
    assert ok.json()["account_id"] == account_id
    [forgotten] = await events_of_type(store, "CustomerForgotten")
    assert forgotten.event.account_id == account_id


async def test_an_admin_forgets_a_customer_through_the_legacy_alias(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, email = await sign_up(api)
    headers = await admin(api, store)

    first = await api.delete(f"/clientes/{account_id}", headers=headers)
    again = await api.delete(f"/clientes/{account_id}", headers=headers)

    assert first.status_code == 200, first.text
    assert_problem(again, 404, "account-not-found")
    login = await api.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(login, 401)
