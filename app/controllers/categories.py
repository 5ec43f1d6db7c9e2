"""Category administration (admin): ``POST /categories``, ``PATCH`` and ``DELETE
/categories/{slug}``. The tree itself is a query (:mod:`app.queries.categories`)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, patch, post
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter

from app.auth import Principal, admin_only
from app.commands import execute
from app.commands.catalog import Name
from app.commands.categories import (
    CreateCategory,
    DeleteCategory,
    RenameCategory,
    Slug,
    category_request,
)
from app.controllers.idempotency import execute_once
from app.controllers.orders import IdempotencyKey
from app.controllers.schemas import Body
from app.problems import problem_responses
from app.services import command_meta, services

SlugPath = Annotated[
    str,
    PathParameter(
        min_length=1, max_length=64, pattern="^[a-z0-9][a-z0-9-]*$", description="Category slug."
    ),
]


class CategoryBody(Body, frozen=True, kw_only=True):
    slug: Slug
    name: Name
    parent: Slug | None = None
    """The parent category's slug; leave out for a top-level category."""


class RenameBody(Body, frozen=True, kw_only=True):
    name: Name


class CategoryWritten(msgspec.Struct, frozen=True, kw_only=True):
    slug: str
    position: str


class CategoryController(Controller):
    path = "/categories"
    guards = [admin_only]
    tags = ["catalog"]

    async def _run(self, request: Request[Principal, Any, Any], state: State, command: Any) -> str:
        meta = command_meta(request, f"account:{request.user.account_id}")
        return (await execute(services(state).store, command, meta)).position

    @post(
        "/",
        operation_id="createCategory",
        status_code=201,
        responses=problem_responses(400, 401, 403, 409, 413, 422),
    )
    async def create(
        self,
        request: Request[Principal, Any, Any],
        state: State,
        data: JSONBody[CategoryBody],
        idempotency_key: IdempotencyKey = None,
    ) -> CategoryWritten:
        """Add a category (under ``parent``, which must exist: else 422 naming ``parent``)."""
        command = CreateCategory(slug=data.slug, name=data.name, parent=data.parent)
        result = await execute_once(
            services(state).store,
            command,
            command_meta(request, f"account:{request.user.account_id}"),
            key=idempotency_key,
            scope=f"category:{request.user.account_id}",
            fingerprint=category_request(command),
        )
        return CategoryWritten(slug=data.slug, position=result.position)

    @patch(
        "/{slug:str}",
        operation_id="renameCategory",
        responses=problem_responses(400, 401, 403, 404, 409, 413),
    )
    async def rename(
        self,
        request: Request[Principal, Any, Any],
        state: State,
        slug: SlugPath,
        data: JSONBody[RenameBody],
    ) -> CategoryWritten:
        """Rename a category; products keep its slug and show the new name."""
        command = RenameCategory(slug=slug, name=data.name)
        return CategoryWritten(slug=slug, position=await self._run(request, state, command))

    @delete(
        "/{slug:str}",
        operation_id="deleteCategory",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 409),
    )
    async def remove(
        self, request: Request[Principal, Any, Any], state: State, slug: SlugPath
    ) -> CategoryWritten:
        """Take an empty category out of the tree; new products may no longer name it.
        A category that live products name or other categories sit under: 409."""
        command = DeleteCategory(slug=slug)
        return CategoryWritten(slug=slug, position=await self._run(request, state, command))
