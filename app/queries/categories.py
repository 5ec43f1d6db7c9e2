"""``GET /categories``: the category tree with product counts; public."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import msgspec
from litestar import Response, get
from litestar.datastructures import State

from app.auth import PUBLIC
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.read_side import read_side, store_errors
from projections.read_models import CategoryView, ProductView


class CategoryNode(msgspec.Struct, frozen=True, kw_only=True):
    slug: str
    name: str
    parent: str | None
    products: int
    """Live products that carry this slug."""
    total_products: int
    """``products`` of this category and of everything below it."""
    children: list[CategoryNode]


async def category_names(slugs: Iterable[str]) -> dict[str, str]:
    """Slug → current name of the live categories among ``slugs`` (product listings)."""
    wanted = sorted({s for s in slugs if s})
    if not wanted:
        return {}
    with store_errors():
        docs = await CategoryView.find(
            {"_id": {"$in": wanted}, "deleted": False, "version": {"$gt": 0}}
        ).to_list()
    return {d.id: d.name for d in docs}


def build_tree(categories: list[CategoryView], counts: dict[str, int]) -> list[CategoryNode]:
    """Nest ``categories`` under their parents (a parent no longer live puts its children at
    the root), siblings by slug."""
    live = {c.id for c in categories}
    children: dict[str | None, list[CategoryView]] = {}
    for c in sorted(categories, key=lambda c: c.id):
        children.setdefault(c.parent if c.parent in live else None, []).append(c)

    def node(c: CategoryView) -> CategoryNode:
        below = [node(child) for child in children.get(c.id, [])]
        own = counts.get(c.id, 0)
        return CategoryNode(
            slug=c.id,
            name=c.name,
            parent=c.parent if c.parent in live else None,
            products=own,
            total_products=own + sum(b.total_products for b in below),
            children=below,
        )

    return [node(c) for c in children.get(None, [])]


@get(
    "/categories",
    opt=PUBLIC,
    security=[{}],
    tags=["catalog"],
    operation_id="listCategories",
    responses=problem_responses(400),
)
async def list_categories(
    state: State, min_position: MinPosition = None
) -> Response[list[CategoryNode]]:
    """Every live category as a tree, each with its number of live products."""
    side = await read_side(state)
    view = await wait_for(side.read_models, min_position)
    with store_errors():
        categories = await CategoryView.find({"deleted": False, "version": {"$gt": 0}}).to_list()
        totals = await asyncio.gather(
            *(ProductView.find({"deleted": False, "category": c.id}).count() for c in categories)
        )
    counts = {c.id: n for c, n in zip(categories, totals, strict=True)}
    return view_response(build_tree(categories, counts), view)
