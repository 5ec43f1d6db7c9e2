"""``GET /sellers`` (admin): the seller accounts from the read model, keyset pages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from app.auth import admin_only
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.cursors import decode_cursor, encode_cursor
from app.queries.read_side import read_side, store_errors
from projections.read_models import AccountView

SORT = "id"


class Seller(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    name: str
    active: bool
    created_at: datetime | None


class SellerPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Seller]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; ``null`` on the last page."""


@get(
    "/sellers",
    guards=[admin_only],
    tags=["sellers"],
    operation_id="listSellers",
    responses=problem_responses(400, 401, 403),
)
async def list_sellers(
    state: State,
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, QueryParameter(max_length=1000)] = None,
    min_position: MinPosition = None,
) -> Response[SellerPage]:
    """Admin: every seller account, oldest first (ids are time-ordered)."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    query: dict[str, Any] = {"version": {"$gt": 0}, "role": "seller"}
    if cursor:
        query["_id"] = {"$gt": decode_cursor(cursor, SORT).id}
    with store_errors():
        docs = await AccountView.find(query).sort([("_id", 1)]).limit(limit + 1).to_list()
    more = len(docs) > limit
    docs = docs[:limit]
    items = [
        Seller(id=d.id, email=d.email, name=d.name, active=d.active, created_at=d.created_at)
        for d in docs
    ]
    next_cursor = encode_cursor(SORT, None, docs[-1].id) if more else None
    return view_response(SellerPage(items=items, next_cursor=next_cursor), view)
