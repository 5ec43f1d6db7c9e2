"""The signed-in customer's own changes (``PATCH /accounts/me``, ``POST /accounts/me/password``,
``DELETE /accounts/me``) and an admin's (``POST /accounts/{id}/deactivate`` and
``/reactivate``, ``DELETE /accounts/{id}``).

Reads (``GET /accounts/me``, ``GET /accounts``, ``GET /accounts/{id}``) are the query
API's, in :mod:`app.queries.accounts`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, delete, patch, post
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter

from app.auth import Principal, admin_only
from app.auth_rate_limit import auth_rate_limit
from app.commands import execute
from app.commands.accounts import account_aggregate
from app.commands.profile import (
    ChangePassword,
    ChangeProfile,
    DeactivateAccount,
    ForgetCustomer,
    NoSuchAccount,
    ReactivateAccount,
    WrongPassword,
    forget_customer,
)
from app.commands.runner import state_of
from app.controllers.schemas import (
    AccountChanged,
    Body,
    LoginPassword,
    Password,
    PersonName,
)
from app.problems import problem_responses
from app.services import command_meta, services
from events.states import AccountState
from events.types import ShippingAddress

Line = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
AccountPath = Annotated[str, PathParameter(min_length=1, max_length=100, description="Account id.")]
OptionalLine = Annotated[str, msgspec.Meta(max_length=200)]


class ShippingAddressBody(Body, frozen=True, kw_only=True):
    line1: Line
    line2: OptionalLine = ""
    city: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    region: Annotated[str, msgspec.Meta(max_length=100)] = ""
    postal_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    country: Annotated[
        str, msgspec.Meta(pattern="^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code.")
    ] = "BR"


class ProfileBody(Body, frozen=True, kw_only=True):
    """Fields left out are unchanged; at least one is needed."""

    name: PersonName | None = None
    shipping_address: ShippingAddressBody | None = None


class PasswordBody(Body, frozen=True, kw_only=True):
    current_password: LoginPassword
    new_password: Password


class ForgetBody(Body, frozen=True, kw_only=True):
    password: LoginPassword
    """Your current password: forgetting cannot be undone."""


class DeactivateBody(Body, frozen=True, kw_only=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


def _actor(request: Request[Principal, Any, Any]) -> str:
    return f"account:{request.user.account_id}"


async def run_account_command(
    request: Request[Principal, Any, Any], state: State, command: Any
) -> AccountChanged:
    """Execute an account command as the signed-in caller; its id and position."""
    result = await execute(services(state).store, command, command_meta(request, _actor(request)))
    return AccountChanged(account_id=command.account_id, position=result.position)


async def change_profile(
    request: Request[Principal, Any, Any], state: State, account_id: str, data: ProfileBody
) -> AccountChanged:
    """Shared by ``PATCH /accounts/me`` and the legacy ``PATCH /clientes/me``."""
    address = data.shipping_address
    command = ChangeProfile(
        account_id=account_id,
        name=data.name,
        shipping_address=None
        if address is None
        else msgspec.convert(msgspec.to_builtins(address), ShippingAddress),
    )
    return await run_account_command(request, state, command)


async def change_password(
    request: Request[Principal, Any, Any], state: State, data: PasswordBody
) -> AccountChanged:
    """Check the current password against the write side's hash, then replace it; the
    decision re-checks that the hash is still the one checked."""
    svc = services(state)
    account_id = request.user.account_id
    aggregate = account_aggregate(account_id)
    account = state_of(await svc.store.load([aggregate]), aggregate, AccountState)
    if not account.exists:
        raise NoSuchAccount(f"account {account_id} does not exist")
    if not await svc.passwords.verify(account.password_hash or None, data.current_password):
        raise WrongPassword("current_password is wrong", field="current_password")
    new_hash = await svc.passwords.hash(data.new_password)
    command = ChangePassword(
        account_id=account_id, checked_hash=account.password_hash, password_hash=new_hash
    )
    return await run_account_command(request, state, command)


@patch(
    "/accounts/me",
    tags=["accounts"],
    operation_id="updateMyAccount",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
)
async def update_my_account(
    request: Request[Principal, Any, Any], state: State, data: JSONBody[ProfileBody]
) -> AccountChanged:
    """Change your name and/or shipping address (the email stays). Nothing to change: 422."""
    return await change_profile(request, state, request.user.account_id, data)


@post(
    "/accounts/me/password",
    tags=["accounts"],
    operation_id="changeMyPassword",
    status_code=200,
    middleware=[auth_rate_limit("login")],
    responses=problem_responses(400, 401, 403, 404, 413, 429),
)
async def change_my_password(
    request: Request[Principal, Any, Any], state: State, data: JSONBody[PasswordBody]
) -> AccountChanged:
    """Replace your password: a wrong ``current_password`` is a 403. The old password stops
    working at once, and every session (refresh token) opened before ends."""
    return await change_password(request, state, data)


@post(
    "/accounts/{account_id:str}/deactivate",
    guards=[admin_only],
    tags=["accounts"],
    operation_id="deactivateAccount",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def deactivate_account(
    request: Request[Principal, Any, Any],
    state: State,
    account_id: AccountPath,
    data: JSONBody[DeactivateBody | None] = None,
) -> AccountChanged:
    """Admin: the account can no longer log in or refresh; its access tokens expire within
    their TTL. Already deactivated: 409."""
    reason = data.reason if data is not None else ""
    return await run_account_command(
        request, state, DeactivateAccount(account_id=account_id, reason=reason)
    )


@post(
    "/accounts/{account_id:str}/reactivate",
    guards=[admin_only],
    tags=["accounts"],
    operation_id="reactivateAccount",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 409),
)
async def reactivate_account(
    request: Request[Principal, Any, Any], state: State, account_id: AccountPath
) -> AccountChanged:
    """Admin: undo a deactivation (the account logs in again). Already active: 409."""
    return await run_account_command(request, state, ReactivateAccount(account_id=account_id))


async def forget(
    request: Request[Principal, Any, Any], state: State, account_id: str
) -> AccountChanged:
    """Forget ``account_id`` (``CustomerForgotten``, then its key is destroyed)."""
    meta = command_meta(request, _actor(request))
    position = await forget_customer(
        services(state).store, ForgetCustomer(account_id=account_id), meta
    )
    return AccountChanged(account_id=account_id, position=position)


@delete(
    "/accounts/me",
    tags=["accounts"],
    operation_id="forgetMyAccount",
    status_code=200,
    middleware=[auth_rate_limit("login")],
    responses=problem_responses(400, 401, 403, 404, 409, 413, 429),
)
async def forget_my_account(
    request: Request[Principal, Any, Any], state: State, data: JSONBody[ForgetBody]
) -> AccountChanged:
    """Forget your account for good: your name, email and address become unreadable
    everywhere, your email may sign up again, and you cannot log in any more. Your orders
    stay, without you. A wrong ``password`` is a 403."""
    return await forget_me(request, state, data.password)


async def forget_me(
    request: Request[Principal, Any, Any], state: State, password: str
) -> AccountChanged:
    """Forget the caller's own account once ``password`` is its password (also behind the
    legacy ``DELETE /clientes/me``)."""
    svc = services(state)
    account_id = request.user.account_id
    aggregate = account_aggregate(account_id)
    account = state_of(await svc.store.load([aggregate]), aggregate, AccountState)
    if not account.exists or account.forgotten:
        raise NoSuchAccount(f"account {account_id} does not exist")
    if not await svc.passwords.verify(account.password_hash or None, password):
        raise WrongPassword("password is wrong", field="password")
    return await forget(request, state, account_id)


@delete(
    "/accounts/{account_id:str}",
    guards=[admin_only],
    tags=["accounts"],
    operation_id="forgetAccount",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 409),
)
async def forget_account(
    request: Request[Principal, Any, Any], state: State, account_id: AccountPath
) -> AccountChanged:
    """Admin: forget a customer for good (crypto-shredding). Unknown or already forgotten:
    404; an admin account: 409."""
    return await forget(request, state, account_id)
