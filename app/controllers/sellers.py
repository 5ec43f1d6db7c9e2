"""``POST /sellers`` (admin): open a seller account, which then logs in like any account."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import JSONBody

from app.auth import Principal, admin_only
from app.commands.accounts import SignUp, normalize_email, sign_up_request
from app.controllers.idempotency import execute_once
from app.controllers.orders import IdempotencyKey
from app.controllers.schemas import Body, Email, Password, PersonName
from app.problems import problem_responses
from app.services import command_meta, services


class SellerBody(Body, frozen=True, kw_only=True):
    name: PersonName
    email: Email
    password: Password


class SellerCreated(msgspec.Struct, frozen=True, kw_only=True):
    seller_id: str
    """The seller's account id: what its products carry as ``seller_id``."""
    position: str


@post(
    "/sellers",
    guards=[admin_only],
    tags=["sellers"],
    operation_id="createSeller",
    status_code=201,
    responses=problem_responses(400, 401, 403, 409, 413, 422),
)
async def create_seller(
    request: Request[Principal, Any, Any],
    state: State,
    data: JSONBody[SellerBody],
    idempotency_key: IdempotencyKey = None,
) -> SellerCreated:
    """Open an account with the ``seller`` role; a taken email is a 409."""
    svc = services(state)
    password_hash = await svc.passwords.hash(data.password)
    command = SignUp(email=data.email, name=data.name, password_hash=password_hash, role="seller")
    meta = command_meta(request, f"account:{request.user.account_id}")
    digest = svc.store.personal.email_digest(normalize_email(data.email))
    result = await execute_once(
        svc.store,
        command,
        meta,
        key=idempotency_key,
        scope=f"seller:{request.user.account_id}",
        fingerprint=sign_up_request(digest, "seller"),
    )
    return SellerCreated(
        seller_id=msgspec.json.decode(result.result)["account_id"], position=result.position
    )
