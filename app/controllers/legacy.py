"""The older Portuguese API (``/criarConta``, ``/login``, ``/faturarPedido``), kept for its
clients: Portuguese payloads over the very same commands and rules."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import JSONBody

from app.auth import PUBLIC, Principal
from app.auth_rate_limit import auth_rate_limit
from app.commands.billing import BillLine, Quantity
from app.commands.catalog import LegacyId, ProductId
from app.commands.errors import DomainError, Forbidden, UnknownProduct
from app.controllers.accounts import login_account, sign_up_account
from app.controllers.orders import IdempotencyKey, bill
from app.controllers.schemas import Body, Email, LoginPassword, Password, PersonName
from app.problems import problem_responses
from app.services import services


class CriarContaBody(Body, frozen=True, kw_only=True):
    nome: PersonName
    email: Email
    senha: Password


class ContaCriada(msgspec.Struct, frozen=True, kw_only=True):
    usuario_id: str
    position: str


class LoginLegadoBody(Body, frozen=True, kw_only=True):
    email: Email
    senha: LoginPassword


class LoginLegado(msgspec.Struct, frozen=True, kw_only=True):
    token: str
    token_type: str = "bearer"
    expires_in: int
    usuario_id: str
    position: str


class ProdutoPedido(Body, frozen=True, kw_only=True):
    id: LegacyId | ProductId
    """The product's legacy integer id, or its current product id."""
    quantidade: Quantity


class FaturarPedidoBody(Body, frozen=True, kw_only=True):
    usuario_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    produtos: Annotated[list[ProdutoPedido], msgspec.Meta(min_length=1, max_length=100)]


class ItemFaturado(msgspec.Struct, frozen=True, kw_only=True):
    produto_id: str
    nome: str
    quantidade: int
    preco_unitario: int
    total_item: int


class PedidoFaturado(msgspec.Struct, frozen=True, kw_only=True):
    pedido_id: str
    itens: list[ItemFaturado]
    total: int
    moeda: str
    position: str


@post(
    "/criarConta",
    opt=PUBLIC,
    security=[{}],
    tags=["legacy"],
    operation_id="criarConta",
    status_code=201,
    responses=problem_responses(400, 409, 413),
)
async def criar_conta(
    request: Request[Any, Any, Any], state: State, data: JSONBody[CriarContaBody]
) -> ContaCriada:
    """Legacy sign-up: same rules as ``POST /accounts``."""
    account_id, position = await sign_up_account(
        request, state, name=data.nome, email=data.email, password=data.senha
    )
    return ContaCriada(usuario_id=account_id, position=position)


@post(
    "/login",
    opt=PUBLIC,
    security=[{}],
    tags=["legacy"],
    operation_id="loginLegado",
    status_code=200,
    middleware=[auth_rate_limit("login")],
    responses=problem_responses(400, 401, 403, 413, 429),
)
async def login_legado(
    request: Request[Any, Any, Any], state: State, data: JSONBody[LoginLegadoBody]
) -> LoginLegado:
    """Legacy login: same rules as ``POST /auth/login``; answers the token and ``usuario_id``."""
    token = await login_account(request, state, email=data.email, password=data.senha)
    return LoginLegado(
        token=token.access_token,
        expires_in=token.expires_in,
        usuario_id=token.account_id,
        position=token.position,
    )


_LINE_FIELD = re.compile(r"^lines\[(\d+)\]\.(product_id|quantity)$")
_LEGACY_FIELD = {"product_id": "id", "quantity": "quantidade"}


def _legacy_field(field: str | None) -> str | None:
    """``lines[2].product_id`` → ``produtos[2].id``: errors name the field the client sent."""
    if field is None:
        return None
    match = _LINE_FIELD.match(field)
    if match is None:
        return field
    return f"produtos[{match.group(1)}].{_LEGACY_FIELD[match.group(2)]}"


@post(
    "/faturarPedido",
    tags=["legacy"],
    operation_id="faturarPedido",
    status_code=201,
    responses=problem_responses(400, 401, 403, 409, 413, 422),
)
async def faturar_pedido(
    request: Request[Principal, Any, Any],
    state: State,
    data: JSONBody[FaturarPedidoBody],
    idempotency_key: IdempotencyKey = None,
) -> PedidoFaturado:
    """Legacy billing: ``usuario_id`` must be the token's account; ``produtos[].id`` may be
    a legacy integer id."""
    if data.usuario_id != request.user.account_id:
        raise Forbidden("usuario_id is not the signed-in account", field="usuario_id")
    store = services(state).store
    lines: list[BillLine] = []
    for i, produto in enumerate(data.produtos):
        product_id = produto.id
        if isinstance(product_id, int):
            owner = await store.owner_of("legacy_product", str(product_id))
            if owner is None:
                raise UnknownProduct(
                    f"line {i}: no product has legacy id {product_id}",
                    field=f"produtos[{i}].id",
                    line=i,
                )
            product_id = owner.removeprefix("product:")
        lines.append(BillLine(product_id=product_id, quantity=produto.quantidade))
    try:
        receipt, position = await bill(request, state, lines, idempotency_key)
    except DomainError as exc:
        exc.field = _legacy_field(exc.field)
        raise
    return PedidoFaturado(
        pedido_id=receipt.order_id,
        itens=[
            ItemFaturado(
                produto_id=line.product_id,
                nome=line.name,
                quantidade=line.quantity,
                preco_unitario=line.unit_price,
                total_item=line.line_total,
            )
            for line in receipt.lines
        ],
        total=receipt.total,
        moeda=receipt.currency,
        position=position,
    )
