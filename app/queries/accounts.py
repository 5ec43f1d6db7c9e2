"""Accounts from the read model: ``GET /accounts/me`` (the signed-in account) and, for admins,
``GET /accounts?q=&cursor=`` (search by name or email, keyset pages) and ``GET /accounts/{id}``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter, QueryParameter

from app.auth import Principal, admin_only
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.cursors import decode_cursor, encode_cursor
from app.queries.read_side import read_side, store_errors
from projections.read_models import AccountView

SORT = "id"

AccountPath = Annotated[str, PathParameter(min_length=1, max_length=100, description="Account id.")]
Search = Annotated[
    str | None, QueryParameter(max_length=200, description="Part of the name or email (any case).")
]
Limit = Annotated[int, QueryParameter(ge=1, le=100)]
PageCursor = Annotated[str | None, QueryParameter(max_length=1000)]


class ShippingAddress(msgspec.Struct, frozen=True, kw_only=True):
    line1: str
    line2: str
    city: str
    region: str
    postal_code: str
    country: str


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    name: str
    role: str
    shipping_address: ShippingAddress | None
    active: bool
    """``false`` while an admin has deactivated the account."""
    forgotten: bool = False
    """``true`` once the customer was forgotten (``DELETE /accounts/{id}``): email, name and
    shipping address are empty for good."""
    created_at: datetime | None
    last_login_at: datetime | None
    orders_count: int
    total_spent: int
    version: int


class AccountPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Account]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; ``null`` on the last page."""


def account_of(doc: AccountView) -> Account:
    address = doc.shipping_address
    return Account(
        id=doc.id,
        email=doc.email,
        name=doc.name,
        role=doc.role,
        shipping_address=None if address is None else ShippingAddress(**address.model_dump()),
        active=doc.active,
        forgotten=doc.forgotten,
        created_at=doc.created_at,
        last_login_at=doc.last_login_at,
        orders_count=doc.orders_count,
        total_spent=doc.total_spent,
        version=doc.version,
    )


async def _one(account_id: str) -> Account:
    with store_errors():
        doc = await AccountView.get(account_id)
    if doc is None or doc.version == 0:
        raise NotFoundException("no such account in the read model (yet)")
    return account_of(doc)


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
    return await account_by_id(state, request.user.account_id, min_position)


@get(
    "/accounts/{account_id:str}",
    guards=[admin_only],
    tags=["accounts"],
    operation_id="getAccount",
    responses=problem_responses(400, 401, 403, 404),
)
async def get_account(
    state: State, account_id: AccountPath, min_position: MinPosition = None
) -> Response[Account]:
    """Admin: any account by id."""
    return await account_by_id(state, account_id, min_position)


async def account_by_id(
    state: State, account_id: str, min_position: str | None
) -> Response[Account]:
    """Shared by ``GET /accounts/{id}`` and the legacy ``GET /clientes/{id}``."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    return view_response(await _one(account_id), view)


@get(
    "/accounts",
    guards=[admin_only],
    tags=["accounts"],
    operation_id="listAccounts",
    responses=problem_responses(400, 401, 403),
)
async def list_accounts(
    state: State,
    q: Search = None,
    limit: Limit = 20,
    cursor: PageCursor = None,
    min_position: MinPosition = None,
) -> Response[AccountPage]:
    """Admin: accounts whose name or email contains ``q``, oldest first (ids are time-ordered)."""
    return await search_accounts(state, q, limit, cursor, min_position)


async def search_accounts(
    state: State, q: str | None, limit: int, cursor: str | None, min_position: str | None
) -> Response[AccountPage]:
    """Shared by ``GET /accounts`` and the legacy ``GET /clientes``."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    query: dict[str, Any] = {"version": {"$gt": 0}}
    if q:
        pattern = re.escape(q.strip().casefold())
        query["$or"] = [{"name_key": {"$regex": pattern}}, {"email": {"$regex": pattern}}]
    if cursor:
        query["_id"] = {"$gt": decode_cursor(cursor, SORT).id}
    with store_errors():
        docs = await AccountView.find(query).sort([("_id", 1)]).limit(limit + 1).to_list()
    more = len(docs) > limit
    docs = docs[:limit]
    next_cursor = encode_cursor(SORT, None, docs[-1].id) if more else None
    page = AccountPage(items=[account_of(d) for d in docs], next_cursor=next_cursor)
    return view_response(page, view)
