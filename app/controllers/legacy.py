"""The older Portuguese API (``/criarConta``, ``/login``, ``/faturarPedido``), kept for its
clients: Portuguese payloads over the very same commands and rules."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import JSONBody

from app.auth import PUBLIC, Principal, admin_only
from app.auth_rate_limit import auth_rate_limit
from app.commands.billing import BillLine, Quantity
from app.commands.catalog import LegacyId, ProductId
from app.commands.errors import DomainError, Forbidden, UnknownProduct
from app.commands.profile import DeactivateAccount, ReactivateAccount
from app.controllers.accounts import login_account, sign_up_account
from app.controllers.accounts_profile import (
    AccountChanged,
    PasswordBody,
    ProfileBody,
    ShippingAddressBody,
    change_password,
    change_profile,
    forget,
    forget_me,
    run_account_command,
)
from app.controllers.orders import IdempotencyKey, bill
from app.controllers.schemas import Body, Email, LoginPassword, Password, PersonName
from app.problems import problem_responses
from app.queries.accounts import (
    Account,
    AccountPage,
    AccountPath,
    Limit,
    PageCursor,
    Search,
    account_by_id,
    search_accounts,
)
from app.queries.consistency import MinPosition
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
        receipt = await bill(request, state, lines, idempotency_key)
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
        position=receipt.position,
    )


# -- /clientes: aliases of the account routes (issue 15) --------------------------------


class EnderecoBody(Body, frozen=True, kw_only=True):
    logradouro: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    complemento: Annotated[str, msgspec.Meta(max_length=200)] = ""
    cidade: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    estado: Annotated[str, msgspec.Meta(max_length=100)] = ""
    cep: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    pais: Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")] = "BR"


class PerfilBody(Body, frozen=True, kw_only=True):
    nome: PersonName | None = None
    endereco_entrega: EnderecoBody | None = None


class SenhaBody(Body, frozen=True, kw_only=True):
    senha_atual: LoginPassword
    nova_senha: Password


class EsquecerBody(Body, frozen=True, kw_only=True):
    senha: LoginPassword
    """A senha atual: esquecer não tem volta."""


_CAMPOS = {
    "name": "nome",
    "shipping_address": "endereco_entrega",
    "current_password": "senha_atual",
    "password": "senha",
}


def _campo(field: str | None) -> str | None:
    return None if field is None else _CAMPOS.get(field, field)


@patch(
    "/clientes/me",
    tags=["legacy"],
    operation_id="atualizarCliente",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
)
async def atualizar_cliente(
    request: Request[Principal, Any, Any], state: State, data: JSONBody[PerfilBody]
) -> AccountChanged:
    """Legacy ``PATCH /accounts/me``: ``nome`` and ``endereco_entrega``."""
    e = data.endereco_entrega
    body = ProfileBody(
        name=data.nome,
        shipping_address=None
        if e is None
        else ShippingAddressBody(
            line1=e.logradouro,
            line2=e.complemento,
            city=e.cidade,
            region=e.estado,
            postal_code=e.cep,
            country=e.pais,
        ),
    )
    try:
        return await change_profile(request, state, request.user.account_id, body)
    except DomainError as exc:
        exc.field = _campo(exc.field)
        raise


@post(
    "/clientes/me/senha",
    tags=["legacy"],
    operation_id="trocarSenha",
    status_code=200,
    middleware=[auth_rate_limit("login")],
    responses=problem_responses(400, 401, 403, 404, 413, 429),
)
async def trocar_senha(
    request: Request[Principal, Any, Any], state: State, data: JSONBody[SenhaBody]
) -> AccountChanged:
    """Legacy ``POST /accounts/me/password``: ``senha_atual`` and ``nova_senha``."""
    body = PasswordBody(current_password=data.senha_atual, new_password=data.nova_senha)
    try:
        return await change_password(request, state, body)
    except DomainError as exc:
        exc.field = _campo(exc.field)
        raise


@get(
    "/clientes/me",
    tags=["legacy"],
    operation_id="obterMeuCadastro",
    responses=problem_responses(400, 401, 404),
)
async def obter_meu_cadastro(
    request: Request[Principal, Any, Any], state: State, min_position: MinPosition = None
) -> Response[Account]:
    """Legacy ``GET /accounts/me``."""
    return await account_by_id(state, request.user.account_id, min_position)


@get(
    "/clientes",
    guards=[admin_only],
    tags=["legacy"],
    operation_id="listarClientes",
    responses=problem_responses(400, 401, 403),
)
async def listar_clientes(
    state: State,
    q: Search = None,
    limit: Limit = 20,
    cursor: PageCursor = None,
    min_position: MinPosition = None,
) -> Response[AccountPage]:
    """Legacy ``GET /accounts``."""
    return await search_accounts(state, q, limit, cursor, min_position)


@get(
    "/clientes/{cliente_id:str}",
    guards=[admin_only],
    tags=["legacy"],
    operation_id="obterCliente",
    responses=problem_responses(400, 401, 403, 404),
)
async def obter_cliente(
    state: State, cliente_id: AccountPath, min_position: MinPosition = None
) -> Response[Account]:
    """Legacy ``GET /accounts/{id}``."""
    return await account_by_id(state, cliente_id, min_position)


@post(
    "/clientes/{cliente_id:str}/desativar",
    guards=[admin_only],
    tags=["legacy"],
    operation_id="desativarCliente",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 409),
)
async def desativar_cliente(
    request: Request[Principal, Any, Any], state: State, cliente_id: AccountPath
) -> AccountChanged:
    """Legacy ``POST /accounts/{id}/deactivate``."""
    return await run_account_command(request, state, DeactivateAccount(account_id=cliente_id))


@post(
    "/clientes/{cliente_id:str}/reativar",
    guards=[admin_only],
    tags=["legacy"],
    operation_id="reativarCliente",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 409),
)
async def reativar_cliente(
    request: Request[Principal, Any, Any], state: State, cliente_id: AccountPath
) -> AccountChanged:
    """Legacy ``POST /accounts/{id}/reactivate``."""
    return await run_account_command(request, state, ReactivateAccount(account_id=cliente_id))


@delete(
    "/clientes/me",
    tags=["legacy"],
    operation_id="esquecerMeuCadastro",
    status_code=200,
    middleware=[auth_rate_limit("login")],
    responses=problem_responses(400, 401, 403, 404, 409, 413, 429),
)
async def esquecer_meu_cadastro(
    request: Request[Principal, Any, Any], state: State, data: JSONBody[EsquecerBody]
) -> AccountChanged:
    """Legacy ``DELETE /accounts/me``: ``senha``."""
    try:
        return await forget_me(request, state, data.senha)
    except DomainError as exc:
        exc.field = _campo(exc.field)
        raise


@delete(
    "/clientes/{cliente_id:str}",
    guards=[admin_only],
    tags=["legacy"],
    operation_id="esquecerCliente",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 409),
)
async def esquecer_cliente(
    request: Request[Principal, Any, Any], state: State, cliente_id: AccountPath
) -> AccountChanged:
    """Legacy ``DELETE /accounts/{id}``."""
    return await forget(request, state, cliente_id)
