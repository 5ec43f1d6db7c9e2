"""Sign-up and login."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import JSONBody

from app.auth import PUBLIC, issue_token
from app.commands import execute
from app.commands.accounts import SignUp
from app.commands.login import LogIn, log_in
from app.controllers.schemas import Body, Email, LoginPassword, Password, PersonName, Token
from app.problems import problem_responses
from app.services import command_meta, services


class SignUpBody(Body, frozen=True, kw_only=True):
    name: PersonName
    email: Email
    password: Password


class AccountCreatedResponse(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    position: str


class LoginBody(Body, frozen=True, kw_only=True):
    email: Email
    password: LoginPassword


async def sign_up_account(
    request: Request[Any, Any, Any], state: State, *, name: str, email: str, password: str
) -> tuple[str, str]:
    """Shared by ``/accounts`` and the legacy ``/criarConta``: (account id, position)."""
    svc = services(state)
    password_hash = await svc.passwords.hash(password)
    command = SignUp(email=email, name=name, password_hash=password_hash)
    result = await execute(svc.store, command, command_meta(request))
    return msgspec.json.decode(result.result)["account_id"], result.position


async def login_account(
    request: Request[Any, Any, Any], state: State, *, email: str, password: str
) -> Token:
    svc = services(state)
    outcome = await log_in(
        svc.store,
        LogIn(email=email, password=password),
        command_meta(request),
        passwords=svc.passwords,
        limits=svc.limits,
    )
    ttl = svc.settings.auth.token_ttl_seconds
    return Token(
        access_token=issue_token(svc.jwt_auth, outcome.account_id, outcome.role, ttl),
        expires_in=ttl,
        account_id=outcome.account_id,
        position=outcome.position,
    )


@post(
    "/accounts",
    opt=PUBLIC,
    security=[{}],
    tags=["accounts"],
    operation_id="signUp",
    status_code=201,
    responses=problem_responses(400, 409, 413),
)
async def sign_up(
    request: Request[Any, Any, Any], state: State, data: JSONBody[SignUpBody]
) -> AccountCreatedResponse:
    """Open a customer account. The email is trimmed and lower-cased; a taken one is a 409."""
    account_id, position = await sign_up_account(
        request, state, name=data.name, email=data.email, password=data.password
    )
    return AccountCreatedResponse(account_id=account_id, position=position)


@post(
    "/auth/login",
    opt=PUBLIC,
    security=[{}],
    tags=["accounts"],
    operation_id="login",
    status_code=200,
    responses=problem_responses(400, 401, 413, 429),
)
async def login(request: Request[Any, Any, Any], state: State, data: JSONBody[LoginBody]) -> Token:
    """Exchange email and password for a bearer token. After 5 failures in 15 minutes: 429."""
    return await login_account(request, state, email=data.email, password=data.password)
