"""The older Java catalog feed (Portuguese, ``{prefix}:ingest:produtos``): parsing and translation.

The legacy system publishes whole product snapshots (``acao`` + ``produto``) instead of
events, with integer ids and prices in reais. This module turns one snapshot into the
catalog events that bring our product to that snapshot, given what the write side knows
about the product now. It is pure: no Redis, no clock, so it is unit-tested with plain data.

The gateway (:mod:`workers.ingest`) reads the current state, calls :func:`plan`, and sends
each planned event through the catalog command path, one idempotent append per step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

import msgspec

from events.types import ProductCreated, ProductDeleted, ProductUpdated, StockAdjusted

LEGACY_NAMESPACE = uuid.UUID("4e15ce42-7664-5cb7-a203-c734be102d80")
"""``uuid5(NAMESPACE_URL, "https://streamshop.dev/legacy/produtos")``; fixed forever, because
every legacy product id is derived from it."""

PAYLOAD_FIELD = "payload"

LegacyId = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
Text = Annotated[str, msgspec.Meta(max_length=2000)]


class LegacyProduct(msgspec.Struct, frozen=True, kw_only=True):
    """``produto``: a snapshot of one legacy product. Fields left out are not changed."""

    id: LegacyId
    nome: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    descricao: Text | None = None
    preco: Decimal | None = None
    """Price in reais, a JSON number with at most two decimals (``29.9`` → 2990 centavos)."""
    estoque: Annotated[int, msgspec.Meta(ge=0, le=10**9)] | None = None


class LegacyMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The legacy message: what happened (``acao``) to which product snapshot."""

    acao: Literal["criado", "atualizado", "removido"]
    produto: LegacyProduct


_decoder = msgspec.json.Decoder(LegacyMessage)


class LegacyRejected(ValueError):
    """A legacy message that cannot be applied; ``field`` names the part at fault, if one is."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class CurrentProduct:
    """What the write side knows about a product now; ``None`` fields are not known there."""

    deleted: bool = False
    stock: int = 0
    name: str | None = None
    description: str | None = None
    price: int | None = None


PlannedStep = tuple[str, ProductCreated | ProductUpdated | ProductDeleted | StockAdjusted]
"""(step name, event): the step name keeps a redelivered message's appends idempotent."""


def parse(payload: bytes | str) -> LegacyMessage:
    """Decode a ``payload`` field; raises ``msgspec.DecodeError`` / ``ValidationError``."""
    return _decoder.decode(payload)


def product_id_for(legacy_id: int) -> str:
    """The stable product id of a legacy integer id: the same id always names one product."""
    return str(uuid.uuid5(LEGACY_NAMESPACE, str(legacy_id)))


def sku_for(legacy_id: int) -> str:
    """Legacy products have no SKU; this one is unique per legacy id and easy to recognise."""
    return f"LEGACY-{legacy_id}"


def centavos(preco: Decimal) -> int:
    """Reais as a decimal number → integer centavos, exactly (never through a float)."""
    try:
        if not preco.is_finite() or preco < 0:
            raise LegacyRejected(
                f"produto.preco must be a non-negative number, got {preco}", "produto.preco"
            )
        cents = preco * 100
        if cents != cents.to_integral_value():
            raise LegacyRejected(
                f"produto.preco {preco} has more than two decimal places", "produto.preco"
            )
    except InvalidOperation as exc:
        raise LegacyRejected(f"produto.preco {preco} is not a number", "produto.preco") from exc
    if cents > 2**53:
        raise LegacyRejected(f"produto.preco {preco} is too large", "produto.preco")
    return int(cents)


def _create(produto: LegacyProduct) -> PlannedStep:
    if produto.nome is None:
        raise LegacyRejected("produto.nome is required to create a product", "produto.nome")
    if produto.preco is None:
        raise LegacyRejected("produto.preco is required to create a product", "produto.preco")
    return (
        "create",
        ProductCreated(
            product_id=product_id_for(produto.id),
            sku=sku_for(produto.id),
            name=produto.nome,
            description=produto.descricao or "",
            price=centavos(produto.preco),
            stock=produto.estoque or 0,
            legacy_id=produto.id,
        ),
    )


def _changes(produto: LegacyProduct, current: CurrentProduct) -> list[PlannedStep]:
    """Only what differs from the current state, so a re-sent snapshot changes nothing."""
    product_id = product_id_for(produto.id)
    steps: list[PlannedStep] = []
    name = produto.nome if produto.nome is not None and produto.nome != current.name else None
    description = (
        produto.descricao
        if produto.descricao is not None and produto.descricao != current.description
        else None
    )
    price = centavos(produto.preco) if produto.preco is not None else None
    if price is not None and price == current.price:
        price = None
    if name is not None or description is not None or price is not None:
        steps.append(
            (
                "update",
                ProductUpdated(
                    product_id=product_id, name=name, description=description, price=price
                ),
            )
        )
    if produto.estoque is not None and produto.estoque != current.stock:
        delta = produto.estoque - current.stock
        steps.append(
            (
                "stock",
                StockAdjusted(
                    product_id=product_id,
                    delta=delta,
                    reason=f"legacy feed: estoque {current.stock} -> {produto.estoque}",
                ),
            )
        )
    return steps


def plan(message: LegacyMessage, current: CurrentProduct | None) -> list[PlannedStep]:
    """The events that bring our product to the legacy snapshot (possibly none).

    ``criado`` of a product we already have and ``atualizado`` of one we do not have yet
    are both treated as "make it look like this": feeds get re-sent and started late, and a
    snapshot says everything needed. A removed product stays removed.
    """
    produto = message.produto
    if message.acao == "removido":
        if current is None:
            raise LegacyRejected(f"legacy product {produto.id} is not known", "produto.id")
        if current.deleted:
            return []
        return [("delete", ProductDeleted(product_id=product_id_for(produto.id)))]
    if current is not None and current.deleted:
        raise LegacyRejected(
            f"legacy product {produto.id} was removed and cannot be {message.acao} again",
            "produto.id",
        )
    if current is None:
        return [_create(produto)]
    return _changes(produto, current)
