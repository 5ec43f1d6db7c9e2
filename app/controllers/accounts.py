"""Sign-up, login, and the session routes: refresh and logout."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import JSONBody

from app.auth import PUBLIC, issue_token
from app.auth_rate_limit import auth_rate_limit
from app.auth_sessions import InvalidRefreshToken, Rotation, password_fingerprint
from app.commands.accounts import SignUp, account_aggregate, normalize_email, sign_up_request
from app.commands.login import LogIn, LoginResult, log_in
from app.commands.runner import state_of
from app.controllers.idempotency import execute_once
from app.controllers.orders import IdempotencyKey
from app.controllers.schemas import (
    AccountChanged,
    Body,
    Email,
    LoginPassword,
    Password,
    PersonName,
    Token,
)
from app.problems import problem_responses
from app.services import command_meta, services
from events.states import AccountState

RefreshToken = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SignUpBody(Body, frozen=True, kw_only=True):
    name: PersonName
    email: Email
    password: Password


class LoginBody(Body, frozen=True, kw_only=True):
    email: Email
    password: LoginPassword


async def sign_up_account(
    request: Request[Any, Any, Any],
    state: State,
    *,
    name: str,
    email: str,
    password: str,
    idempotency_key: str | None = None,
) -> tuple[str, str]:
    """Shared by ``/accounts`` and the legacy ``/criarConta``: (account id, position).

    A sign-up has no actor, so its keys share one scope: a key reused by anyone for
    another email within a day is refused."""
    svc = services(state)
    password_hash = await svc.passwords.hash(password)
    command = SignUp(email=email, name=name, password_hash=password_hash)
    digest = svc.store.personal.email_digest(normalize_email(email))
    result = await execute_once(
        svc.store,
        command,
        command_meta(request),
        key=idempotency_key,
        scope="signup",
        fingerprint=sign_up_request(digest, command.role),
    )
    return msgspec.json.decode(result.result)["account_id"], result.position


class SessionToken(msgspec.Struct, frozen=True, kw_only=True):
    """An access token and the refresh token that renews it."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int
    """Seconds the access token is valid for."""
    refresh_token: str
    """Single use: ``POST /auth/refresh`` answers the next one; reusing one revokes them all."""
    refresh_expires_in: int
    """Seconds the session lasts unused (each refresh restarts it)."""
    account_id: str
    position: str | None = None
    """Read-your-writes token of the login (``None`` on a refresh, which appends nothing)."""


class RefreshBody(Body, frozen=True, kw_only=True):
    refresh_token: RefreshToken


async def _log_in(
    request: Request[Any, Any, Any], state: State, *, email: str, password: str
) -> LoginResult:
    svc = services(state)
    return await log_in(
        svc.store,
        LogIn(email=email, password=password),
        command_meta(request),
        passwords=svc.passwords,
        limits=svc.limits,
    )


async def login_account(
    request: Request[Any, Any, Any], state: State, *, email: str, password: str
) -> Token:
    """An access token only (the legacy ``/login``, whose clients know no refresh)."""
    svc = services(state)
    outcome = await _log_in(request, state, email=email, password=password)
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
    responses=problem_responses(400, 409, 413, 422),
)
async def sign_up(
    request: Request[Any, Any, Any],
    state: State,
    data: JSONBody[SignUpBody],
    idempotency_key: IdempotencyKey = None,
) -> AccountChanged:
    """Open a customer account. The email is trimmed and lower-cased; a taken one is a 409."""
    account_id, position = await sign_up_account(
        request,
        state,
        name=data.name,
        email=data.email,
        password=data.password,
        idempotency_key=idempotency_key,
    )
    return AccountChanged(account_id=account_id, position=position)


@post(
    "/auth/login",
    opt=PUBLIC,
    security=[{}],
    tags=["accounts"],
    operation_id="login",
    status_code=200,
    middleware=[auth_rate_limit("login")],
    responses=problem_responses(400, 401, 403, 413, 429),
)
async def login(
    request: Request[Any, Any, Any], state: State, data: JSONBody[LoginBody]
) -> SessionToken:
    """Exchange email and password for an access token (15 minutes by default) and a
    refresh token. After 5 failures for one email in 15 minutes, or too many attempts from
    one client: 429 with ``Retry-After``. A deactivated account: 403."""
    svc = services(state)
    outcome = await _log_in(request, state, email=data.email, password=data.password)
    refresh = await svc.sessions.open(outcome.account_id, outcome.role, outcome.fingerprint)
    return _session(state, outcome.account_id, outcome.role, refresh, outcome.position)


def _session(
    state: State, account_id: str, role: str, refresh: str, position: str | None
) -> SessionToken:
    svc = services(state)
    ttl = svc.settings.auth.token_ttl_seconds
    return SessionToken(
        access_token=issue_token(svc.jwt_auth, account_id, role, ttl),
        expires_in=ttl,
        refresh_token=refresh,
        refresh_expires_in=svc.sessions.ttl_seconds,
        account_id=account_id,
        position=position,
    )


@post(
    "/auth/refresh",
    opt=PUBLIC,
    security=[{}],
    tags=["accounts"],
    operation_id="refreshSession",
    status_code=200,
    middleware=[auth_rate_limit("refresh")],
    responses=problem_responses(400, 401, 413, 429),
)
async def refresh(
    request: Request[Any, Any, Any], state: State, data: JSONBody[RefreshBody]
) -> SessionToken:
    """Exchange a refresh token for a new access token and the next refresh token.

    401 for an unknown, expired or logged-out token; a token already exchanged revokes its
    whole session (401 for every token of that login from then on). A deactivated account
    or a changed password ends the session too.
    """
    svc = services(state)
    rotated = await svc.sessions.rotate(data.refresh_token)
    if rotated.outcome is not Rotation.ROTATED:
        raise InvalidRefreshToken("the refresh token is not valid (anymore)")
    aggregate = account_aggregate(rotated.account_id)
    account = state_of(await svc.store.load([aggregate]), aggregate, AccountState)
    current = password_fingerprint(account.password_hash)
    if not account.exists or not account.active or current != rotated.fingerprint:
        await svc.sessions.revoke_family(rotated.family)
        raise InvalidRefreshToken("the session was ended (account deactivated or password changed)")
    return _session(state, rotated.account_id, account.role, rotated.token, None)


@post(
    "/auth/logout",
    opt=PUBLIC,
    security=[{}],
    tags=["accounts"],
    operation_id="logout",
    status_code=204,
    responses=problem_responses(400, 413),
)
async def logout(state: State, data: JSONBody[RefreshBody]) -> None:
    """End the session the refresh token belongs to: every refresh token of that login is
    refused from then on. Access tokens already issued live until they expire."""
    await services(state).sessions.revoke(data.refresh_token)
