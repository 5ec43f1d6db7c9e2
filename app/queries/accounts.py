"""``GET /accounts/me``: the signed-in account from the read model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

from app.auth import Principal
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.read_side import read_side, store_errors
from projections.read_models import AccountView


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    name: str
    role: str
    created_at: datetime | None
    last_login_at: datetime | None
    orders_count: int
    total_spent: int
    version: int


@get(
    "/accounts/me",
    tags=["accounts"],
    operation_id="getMyAccount",
    responses=problem_responses(400, 401, 404),
)
async def my_account(
    request: Request[Principal, Any, Any], state: State, min_position: MinPosition = None
) -> Response[Account]:
    """The caller's account as the read model has it (404 until sign-up is projected)."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    with store_errors():
        doc = await AccountView.get(request.user.account_id)
    if doc is None or doc.version == 0:
        raise NotFoundException("no such account in the read model (yet)")
    account = Account(
        id=doc.id,
        email=doc.email,
        name=doc.name,
        role=doc.role,
        created_at=doc.created_at,
        last_login_at=doc.last_login_at,
        orders_count=doc.orders_count,
        total_spent=doc.total_spent,
        version=doc.version,
    )
    return view_response(account, view)
