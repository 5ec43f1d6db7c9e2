"""``GET /products`` (search, filters, sorts, keyset pages) and ``GET /products/{id}``; public."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter, QueryParameter

from app.auth import PUBLIC
from app.problems import problem_responses
from app.queries.categories import category_names
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.cursors import after, bad_param, decode_cursor, encode_cursor
from app.queries.read_side import read_side, store_errors
from projections.read_models import ProductView

Sort = Literal["name", "-name", "price", "-price", "newest", "oldest"]
SORTS: dict[str, tuple[str, bool]] = {
    "name": ("name_key", False),
    "-name": ("name_key", True),
    "price": ("price", False),
    "-price": ("price", True),
    "newest": ("created_at", True),
    "oldest": ("created_at", False),
}
"""Sort name → (field, descending); ties are broken by id in the same direction."""


class Product(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    sku: str
    name: str
    description: str
    category: str
    price: int
    currency: str
    stock: int
    reserved: int
    """Units held by unpaid checkouts; not in ``stock`` until they expire or are cancelled."""
    in_stock: bool
    created_at: datetime | None
    updated_at: datetime | None
    category_name: str = ""
    """The current name of ``category`` (``""``: none, or no longer in the tree)."""
    seller_id: str | None = None
    """The seller that owns the product (``null``: the shop's own)."""


class ProductPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Product]
    next_cursor: str | None
    """Pass as ``cursor`` (with the same filters and sort) for the next page."""


def product_of(doc: ProductView, names: dict[str, str] | None = None) -> Product:
    return Product(
        category_name=(names or {}).get(doc.category, ""),
        seller_id=doc.seller_id,
        id=doc.id,
        sku=doc.sku,
        name=doc.name,
        description=doc.description,
        category=doc.category,
        price=doc.price,
        currency=doc.currency,
        stock=doc.stock,
        reserved=doc.reserved,
        in_stock=doc.stock > 0,
        created_at=doc.created_at,
        updated_at=doc.updated_at,
    )


def product_filter(
    q: str | None,
    category: str | None,
    min_price: int | None,
    max_price: int | None,
    in_stock: bool | None,
) -> dict[str, Any]:
    """The MongoDB filter for the catalog query (deleted products never show)."""
    query: dict[str, Any] = {"deleted": False}
    if q:
        query["name_key"] = {"$regex": re.escape(q.casefold())}
    if category is not None:
        query["category"] = category
    if min_price is not None or max_price is not None:
        if min_price is not None and max_price is not None and min_price > max_price:
            raise bad_param("min_price", "min_price is above max_price")
        price: dict[str, int] = {}
        if min_price is not None:
            price["$gte"] = min_price
        if max_price is not None:
            # ``$lt max + 1``, not ``$lte max`` (equal for integer prices): SecantusDB 0.7
            # drops the upper bound's equal keys when ``$lte`` follows an equality prefix
            # of a compound index, here ``(deleted, price, _id)``.
            price["$lt"] = max_price + 1
        query["price"] = price
    if in_stock is not None:
        query["stock"] = {"$gt": 0} if in_stock else {"$lt": 1}
    return query


@get(
    "/products",
    opt=PUBLIC,
    security=[{}],
    tags=["catalog"],
    operation_id="listProducts",
    responses=problem_responses(400),
)
async def list_products(
    state: State,
    q: Annotated[
        str | None,
        QueryParameter(min_length=1, max_length=100, description="Part of the name, any case."),
    ] = None,
    category: Annotated[str | None, QueryParameter(max_length=100)] = None,
    min_price: Annotated[int | None, QueryParameter(ge=0)] = None,
    max_price: Annotated[int | None, QueryParameter(ge=0)] = None,
    in_stock: Annotated[bool | None, QueryParameter()] = None,
    sort: Annotated[Sort, QueryParameter()] = "name",
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, QueryParameter(max_length=1000)] = None,
    min_position: MinPosition = None,
) -> Response[ProductPage]:
    """The catalog, filtered and sorted, one page at a time."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    field, descending = SORTS[sort]
    query = product_filter(q, category, min_price, max_price, in_stock)
    if cursor:
        query = {"$and": [query, after(field, descending, decode_cursor(cursor, sort))]}
    direction = -1 if descending else 1
    with store_errors():
        docs = (
            await ProductView.find(query)
            .sort([(field, direction), ("_id", direction)])
            .limit(limit + 1)
            .to_list()
        )
    more = len(docs) > limit
    docs = docs[:limit]
    next_cursor = None
    if more:
        last = docs[-1]
        next_cursor = encode_cursor(sort, getattr(last, field), last.id)
    names = await category_names(d.category for d in docs)
    page = ProductPage(items=[product_of(d, names) for d in docs], next_cursor=next_cursor)
    return view_response(page, view)


@get(
    "/products/{product_id:str}",
    opt=PUBLIC,
    security=[{}],
    tags=["catalog"],
    operation_id="getProduct",
    responses=problem_responses(400, 404),
)
async def get_product(
    state: State,
    product_id: Annotated[str, PathParameter(max_length=100)],
    min_position: MinPosition = None,
) -> Response[Product]:
    """One product of the catalog (404 once deleted)."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    with store_errors():
        doc = await ProductView.get(product_id)
    if doc is None or doc.deleted or doc.version == 0:
        raise NotFoundException("no such product")
    return view_response(product_of(doc, await category_names([doc.category])), view)
