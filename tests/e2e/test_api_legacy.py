"""The older Portuguese API: same flow, same rules, Portuguese payloads."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from events.store import EventStore
from tests.e2e import (
    PASSWORD,
    admin,
    api_fixture,  # noqa: F401
    assert_problem,
    bearer,
    create_product,
    customer,
    events_of_type,
    new_email,
)


async def _conta(api: AsyncTestClient[Any]) -> tuple[str, dict[str, str]]:
    email = new_email()
    criada = await api.post("/criarConta", json={"nome": "João", "email": email, "senha": PASSWORD})
    assert criada.status_code == 201, criada.text
    login = await api.post("/login", json={"email": email, "senha": PASSWORD})
    assert login.status_code == 200, login.text
    return criada.json()["usuario_id"], bearer(login.json()["token"])


async def test_legacy_sign_up_login_and_billing(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    old = await create_product(api, boss, name="Caneca", price=2590, stock=5, legacy_id=42)
    new = await create_product(api, boss, name="Camiseta", price=4990, stock=5)
    email = new_email()
    criada = await api.post("/criarConta", json={"nome": "João", "email": email, "senha": PASSWORD})
    assert criada.status_code == 201, criada.text
    assert set(criada.json()) == {"usuario_id", "position"}
    usuario_id = criada.json()["usuario_id"]
    login = await api.post("/login", json={"email": email, "senha": PASSWORD})
    assert login.status_code == 200, login.text
    assert set(login.json()) == {"token", "token_type", "expires_in", "usuario_id", "position"}
    assert login.json()["usuario_id"] == usuario_id
    pedido = await api.post(
        "/faturarPedido",
        json={
            "usuario_id": usuario_id,
            "produtos": [{"id": 42, "quantidade": 2}, {"id": new, "quantidade": 1}],
        },
        headers=bearer(login.json()["token"]),
    )
    assert pedido.status_code == 201, pedido.text
    body = pedido.json()
    assert set(body) == {"pedido_id", "itens", "total", "moeda", "position"}
    assert body["itens"] == [
        {
            "produto_id": old,
            "nome": "Caneca",
            "quantidade": 2,
            "preco_unitario": 2590,
            "total_item": 5180,
        },
        {
            "produto_id": new,
            "nome": "Camiseta",
            "quantidade": 1,
            "preco_unitario": 4990,
            "total_item": 4990,
        },
    ]
    assert (body["total"], body["moeda"]) == (10170, "BRL")
    [billed] = await events_of_type(store, "OrderBilled")
    assert billed.event.account_id == usuario_id


async def test_legacy_billing_only_for_the_tokens_own_account(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    await create_product(api, boss, legacy_id=7)
    other_id, _ = await customer(api)
    _, headers = await _conta(api)
    before = await store.count()
    resp = await api.post(
        "/faturarPedido",
        json={"usuario_id": other_id, "produtos": [{"id": 7, "quantidade": 1}]},
        headers=headers,
    )
    assert assert_problem(resp, 403)["field"] == "usuario_id"
    assert await store.count() == before


async def test_an_unknown_legacy_id_names_the_line(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    usuario_id, headers = await _conta(api)
    resp = await api.post(
        "/faturarPedido",
        json={"usuario_id": usuario_id, "produtos": [{"id": 999999, "quantidade": 1}]},
        headers=headers,
    )
    assert assert_problem(resp, 422, "unknown-product")["field"] == "produtos[0].id"


async def test_legacy_errors_name_the_portuguese_fields(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    boss = await admin(api, store)
    await create_product(api, boss, legacy_id=8, stock=1)
    usuario_id, headers = await _conta(api)
    resp = await api.post(
        "/faturarPedido",
        json={"usuario_id": usuario_id, "produtos": [{"id": 8, "quantidade": 5}]},
        headers=headers,
    )
    assert assert_problem(resp, 409, "insufficient-stock")["field"] == "produtos[0].quantidade"


async def test_legacy_sign_up_shares_email_uniqueness(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    email = new_email()
    await api.post("/accounts", json={"name": "Ana", "email": email, "password": PASSWORD})
    resp = await api.post("/criarConta", json={"nome": "Ana", "email": email, "senha": PASSWORD})
    assert_problem(resp, 409, "duplicate-email")
