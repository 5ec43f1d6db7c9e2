"""The account views end to end: profile, active flag and admin search in the read model,
the legacy ``/clientes`` aliases, and no view dead-lettering the new account events."""

from __future__ import annotations

from typing import Any

from tests.e2e import PASSWORD, bearer, log_in, new_email
from tests.e2e.test_views_support import (  # noqa: F401
    Shop,
    eventually,
    fresh,
    last_position,
    pg_database_fixture,
    shop_fixture,
)
from tests.e2e.test_views_support import (
    admin_headers as admin_headers_of,
)
from workers.dlq import DeadLetters

ADDRESS = {"line1": "Rua das Flores, 12", "city": "Recife", "postal_code": "50000-000"}


async def _customer(shop: Shop, name: str, email: str | None = None) -> tuple[str, str, Any]:
    email = email or new_email()
    resp = await shop.api.post(
        "/accounts", json={"name": name, "email": email, "password": PASSWORD}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["account_id"], email, bearer(await log_in(shop.api, email))


async def test_my_account_shows_the_changed_profile_and_never_a_password_hash(
    shop: Shop,
) -> None:
    api = shop.api
    account_id, _, headers = await _customer(shop, "Ana")
    changed = await api.patch(
        "/accounts/me", json={"name": "Ana Maria", "shipping_address": ADDRESS}, headers=headers
    )
    await api.post(
        "/accounts/me/password",
        json={"current_password": PASSWORD, "new_password": "another long secret"},
        headers=headers,
    )
    position = await last_position(shop)
    me = fresh(await api.get("/accounts/me", params={"min_position": position}, headers=headers))
    body = me.json()
    assert body["name"] == "Ana Maria"
    assert body["shipping_address"]["city"] == "Recife"
    assert body["active"] is True
    assert body["version"] == 3
    assert changed.json()["account_id"] == account_id
    assert "argon2" not in me.text
    raw = await shop.api.get("/accounts/me", headers=headers)
    assert "password" not in raw.text


async def test_admin_sees_the_active_flag_and_searches_by_name_or_email(shop: Shop) -> None:
    api = shop.api
    admin = await admin_headers_of(shop)
    ids = [(await _customer(shop, f"Zélia {i}"))[0] for i in range(3)]
    other_id, other_email, _ = await _customer(shop, "Bruno", email=f"bruno-{new_email()}")
    await api.post(f"/accounts/{ids[1]}/deactivate", headers=admin)
    position = await last_position(shop)

    page = fresh(
        await api.get(
            "/accounts", params={"q": "zÉlia", "limit": 2, "min_position": position}, headers=admin
        )
    ).json()
    assert [a["id"] for a in page["items"]] == ids[:2]
    assert [a["active"] for a in page["items"]] == [True, False]
    rest = fresh(
        await api.get(
            "/accounts",
            params={"q": "zélia", "limit": 2, "cursor": page["next_cursor"]},
            headers=admin,
        )
    ).json()
    assert [a["id"] for a in rest["items"]] == ids[2:]
    assert rest["next_cursor"] is None

    by_email = fresh(await api.get("/accounts", params={"q": other_email[:12]}, headers=admin))
    assert [a["id"] for a in by_email.json()["items"]] == [other_id]
    one = fresh(await api.get(f"/accounts/{ids[1]}", headers=admin)).json()
    assert (one["id"], one["active"]) == (ids[1], False)
    legacy = fresh(await api.get(f"/clientes/{ids[1]}", headers=admin)).json()
    assert legacy == one


async def test_customers_cannot_list_accounts(shop: Shop) -> None:
    _, _, headers = await _customer(shop, "Carla")
    assert (await shop.api.get("/accounts", headers=headers)).status_code == 403
    assert (await shop.api.get("/clientes", headers=headers)).status_code == 403


async def test_legacy_clientes_aliases_change_the_profile_and_password(shop: Shop) -> None:
    api = shop.api
    _, email, headers = await _customer(shop, "Dora")
    body = {
        "nome": "Dora Lima",
        "endereco_entrega": {
            "logradouro": "Av. Boa Viagem, 1",
            "cidade": "Recife",
            "cep": "51000-000",
        },
    }
    resp = await api.patch("/clientes/me", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    wrong = await api.post(
        "/clientes/me/senha",
        json={"senha_atual": "nope-nope", "nova_senha": "x" * 12},
        headers=headers,
    )
    assert wrong.status_code == 403 and wrong.json()["field"] == "senha_atual"
    ok = await api.post(
        "/clientes/me/senha",
        json={"senha_atual": PASSWORD, "nova_senha": "x" * 12},
        headers=headers,
    )
    assert ok.status_code == 200, ok.text
    await log_in(api, email, "x" * 12)
    me = fresh(
        await api.get(
            "/clientes/me", params={"min_position": ok.json()["position"]}, headers=headers
        )
    ).json()
    assert (me["name"], me["shipping_address"]["postal_code"]) == ("Dora Lima", "51000-000")


async def test_no_view_dead_letters_the_account_events(shop: Shop) -> None:
    api = shop.api
    admin = await admin_headers_of(shop)
    account_id, _, headers = await _customer(shop, "Eva")
    await api.patch("/accounts/me", json={"shipping_address": ADDRESS}, headers=headers)
    await api.post(
        "/accounts/me/password",
        json={"current_password": PASSWORD, "new_password": "another long secret"},
        headers=headers,
    )
    await api.post(f"/accounts/{account_id}/deactivate", headers=admin)
    await api.post(f"/accounts/{account_id}/reactivate", headers=admin)
    position = await last_position(shop)
    fresh(await api.get("/accounts/me", params={"min_position": position}, headers=headers))

    async def audited() -> bool:
        rows = await shop.pool.fetchval(
            "SELECT count(*) FROM audit.events WHERE type = 'AccountReactivated'"
        )
        return bool(rows)

    await eventually(audited, what="the audit to record AccountReactivated")
    letters = DeadLetters(shop.store.redis, shop.store.keys)
    for projection in ("read_models", "audit", "warehouse"):
        assert await letters.list(projection) == [], projection
    payload = await shop.pool.fetchval(
        "SELECT payload::text FROM audit.events WHERE type = 'PasswordChanged'"
    )
    assert "argon2" not in payload
