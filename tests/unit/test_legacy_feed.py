"""The legacy Portuguese catalog feed: parsing, exact money, stable ids, snapshot → events."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec
import pytest

from events.types import ProductCreated, ProductDeleted, ProductUpdated, StockAdjusted
from workers.legacy_feed import (
    LEGACY_NAMESPACE,
    CurrentProduct,
    LegacyRejected,
    centavos,
    parse,
    plan,
    product_id_for,
)


def message(acao: str, **produto: object) -> bytes:
    return msgspec.json.encode({"acao": acao, "produto": produto})


def test_namespace_is_the_documented_uuid5() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://streamshop.dev/legacy/produtos") == (
        LEGACY_NAMESPACE
    )


def test_a_legacy_id_always_maps_to_the_same_product_id() -> None:
    assert product_id_for(42) == product_id_for(42)
    assert product_id_for(42) != product_id_for(43)
    assert uuid.UUID(product_id_for(42)).version == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("29.90", 2990),
        ("29.9", 2990),
        ("0.1", 10),
        ("0.29", 29),
        ("1234567.89", 123456789),
        ("7", 700),
    ],
)
def test_reais_become_exact_centavos(text: str, expected: int) -> None:
    assert centavos(Decimal(text)) == expected


def test_price_parsed_from_json_number_is_exact() -> None:
    parsed = parse(b'{"acao": "criado", "produto": {"id": 1, "nome": "x", "preco": 0.29}}')
    assert parsed.produto.preco is not None
    assert centavos(parsed.produto.preco) == 29  # float(0.29) * 100 == 28.999999999999996


@pytest.mark.parametrize("text", ["1.999", "-1", "NaN", "Infinity"])
def test_prices_that_are_not_centavos_are_rejected(text: str) -> None:
    with pytest.raises(LegacyRejected) as err:
        centavos(Decimal(text))
    assert err.value.field == "produto.preco"


def test_criado_of_a_new_product_creates_it() -> None:
    msg = parse(message("criado", id=7, nome="Café", descricao="500g", preco=29.9, estoque=12))
    [(step, event)] = plan(msg, None)
    assert step == "create"
    assert event == ProductCreated(
        product_id=product_id_for(7),
        sku="LEGACY-7",
        name="Café",
        description="500g",
        price=2990,
        stock=12,
        legacy_id=7,
    )


def test_criado_without_a_price_is_rejected_naming_the_field() -> None:
    with pytest.raises(LegacyRejected) as err:
        plan(parse(message("criado", id=7, nome="Café")), None)
    assert err.value.field == "produto.preco"


def test_atualizado_changes_only_what_differs() -> None:
    current = CurrentProduct(stock=12, name="Café", description="500g", price=2990)
    msg = parse(message("atualizado", id=7, nome="Café", descricao="500g", preco=31.5, estoque=15))
    steps = plan(msg, current)
    assert steps == [
        ("update", ProductUpdated(product_id=product_id_for(7), price=3150)),
        (
            "stock",
            StockAdjusted(
                product_id=product_id_for(7), delta=3, reason="legacy feed: estoque 12 -> 15"
            ),
        ),
    ]


def test_stock_going_down_is_a_negative_adjustment() -> None:
    current = CurrentProduct(stock=12, name="Café", price=2990)
    [(step, event)] = plan(parse(message("atualizado", id=7, estoque=4)), current)
    assert step == "stock"
    assert isinstance(event, StockAdjusted) and event.delta == -8


def test_a_resent_snapshot_changes_nothing() -> None:
    current = CurrentProduct(stock=12, name="Café", description="500g", price=2990)
    msg = parse(message("criado", id=7, nome="Café", descricao="500g", preco=29.90, estoque=12))
    assert plan(msg, current) == []


def test_unknown_current_fields_are_sent_as_updates() -> None:
    current = CurrentProduct(stock=1, name="Café", description=None, price=2990)
    steps = plan(parse(message("atualizado", id=7, descricao="novo")), current)
    assert steps == [("update", ProductUpdated(product_id=product_id_for(7), description="novo"))]


def test_atualizado_of_an_unseen_product_creates_it() -> None:
    [(step, _)] = plan(parse(message("atualizado", id=9, nome="Chá", preco=10)), None)
    assert step == "create"


def test_removido_deletes_and_is_a_no_op_once_deleted() -> None:
    msg = parse(message("removido", id=7))
    assert plan(msg, CurrentProduct(stock=3)) == [
        ("delete", ProductDeleted(product_id=product_id_for(7)))
    ]
    assert plan(msg, CurrentProduct(deleted=True)) == []


def test_removido_of_an_unknown_product_is_rejected() -> None:
    with pytest.raises(LegacyRejected):
        plan(parse(message("removido", id=7)), None)


def test_a_removed_product_is_not_recreated() -> None:
    with pytest.raises(LegacyRejected):
        plan(parse(message("criado", id=7, nome="x", preco=1)), CurrentProduct(deleted=True))


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b'{"acao": "vendido", "produto": {"id": 1}}', "$.acao"),
        (b'{"acao": "criado", "produto": {"id": "1"}}', "$.produto.id"),
        (b'{"acao": "criado", "produto": {"id": 1, "estoque": -1}}', "$.produto.estoque"),
        (b'{"acao": "criado"}', "produto"),
    ],
)
def test_malformed_messages_name_the_field(payload: bytes, where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as err:
        parse(payload)
    assert where in str(err.value)


def test_not_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        parse(b"{acao: criado")
