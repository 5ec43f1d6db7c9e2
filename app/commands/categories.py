"""Category commands: create, rename and delete a node of the catalog tree (admin).

A category is its own aggregate, ``category:<slug>``; products name it by slug, so a
rename changes no product (listings and the warehouse look the name up).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from app.commands.base import Command, request_fingerprint, result_json
from app.commands.catalog import Name, category_aggregate
from app.commands.errors import (
    CategoryAlreadyExists,
    CategoryInUse,
    CategoryNotFound,
    UnknownCategory,
)
from app.commands.runner import Decider, state_of
from events.states import AggregateState, CategoryState
from events.store import Append
from events.types import CategoryCreated, CategoryDeleted, CategoryRenamed

Slug = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern="^[a-z0-9][a-z0-9-]*$",
        description="Lower-case letters, digits and dashes; what products carry as `category`.",
    ),
]


class CreateCategory(Command, frozen=True, kw_only=True):
    slug: Slug
    name: Name
    parent: Slug | None = None


class RenameCategory(Command, frozen=True, kw_only=True):
    slug: Slug
    name: Name


class DeleteCategory(Command, frozen=True, kw_only=True):
    slug: Slug


def category_request(cmd: CreateCategory) -> str:
    """The fingerprint of a creation (:func:`~app.commands.base.request_fingerprint`)."""
    return request_fingerprint(cmd)


# -- pure decisions ------------------------------------------------------------------------


def decide_create_category(
    cmd: CreateCategory, state: CategoryState, parent: CategoryState | None = None
) -> Append:
    """A new slug (or a deleted one again); a parent must be live, and not the slug itself.
    The parent's existence is re-checked inside the append."""
    if state.live:
        raise CategoryAlreadyExists(f"category {cmd.slug!r} already exists", field="slug")
    exists: list[str] = []
    absent: list[tuple[str, str]] = []
    if cmd.parent is not None:
        if cmd.parent == cmd.slug or parent is None or not parent.live:
            raise UnknownCategory(f"category {cmd.parent!r} does not exist", field="parent")
        exists, absent = (
            [category_aggregate(cmd.parent)],
            [(category_aggregate(cmd.parent), "deleted")],
        )
    aggregate = category_aggregate(cmd.slug)
    return Append(
        events=[CategoryCreated(slug=cmd.slug, name=cmd.name, parent=cmd.parent)],
        expect={aggregate: state.v},
        exists=exists,
        absent=absent,
        seen={aggregate: state},
        result=result_json({"slug": cmd.slug, "request": category_request(cmd)}),
    )


def decide_rename_category(cmd: RenameCategory, state: CategoryState) -> Append:
    if not state.live:
        raise CategoryNotFound(f"category {cmd.slug!r} does not exist", field="slug")
    aggregate = category_aggregate(cmd.slug)
    return Append(
        events=[CategoryRenamed(slug=cmd.slug, name=cmd.name)],
        expect={aggregate: state.v},
        seen={aggregate: state},
        result=result_json({"slug": cmd.slug}),
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def decide_delete_category(cmd: DeleteCategory, state: CategoryState) -> Append:
    """Only an empty category goes: no live product names it and no category is under it
    (409 naming both counts). The counts are counters that product and category appends
    move without this category's version, so the append re-checks that both are still
    zero; a product created meanwhile makes it fail (:class:`CategoryInUse` again)."""
    if not state.live:
        raise CategoryNotFound(f"category {cmd.slug!r} does not exist", field="slug")
    if state.products > 0 or state.children > 0:
        raise CategoryInUse(
            f"category {cmd.slug!r} has {_count(state.products, 'product', 'products')} and "
            f"{_count(state.children, 'child category', 'child categories')}",
            field="slug",
            products=state.products,
            children=state.children,
        )
    aggregate = category_aggregate(cmd.slug)
    return Append(
        events=[CategoryDeleted(slug=cmd.slug, parent=state.parent or None)],
        expect={aggregate: state.v},
        absent=[(aggregate, "products"), (aggregate, "children")],
        seen={aggregate: state},
        result=result_json({"slug": cmd.slug}),
    )


# -- how the runner executes them -----------------------------------------------------


def _reads_create(command: CreateCategory) -> list[str]:
    reads = [category_aggregate(command.slug)]
    if command.parent is not None and command.parent != command.slug:
        reads.append(category_aggregate(command.parent))
    return reads


def _decide_create(command: CreateCategory, states: Mapping[str, AggregateState]) -> Append:
    state = state_of(states, category_aggregate(command.slug), CategoryState)
    parent_key = category_aggregate(command.parent or "")
    parent = state_of(states, parent_key, CategoryState) if parent_key in states else None
    return decide_create_category(command, state, parent)


CREATE_CATEGORY: Decider[CreateCategory] = Decider(reads=_reads_create, decide=_decide_create)
RENAME_CATEGORY: Decider[RenameCategory] = Decider(
    reads=lambda c: [category_aggregate(c.slug)],
    decide=lambda c, s: decide_rename_category(
        c, state_of(s, category_aggregate(c.slug), CategoryState)
    ),
)
DELETE_CATEGORY: Decider[DeleteCategory] = Decider(
    reads=lambda c: [category_aggregate(c.slug)],
    decide=lambda c, s: decide_delete_category(
        c, state_of(s, category_aggregate(c.slug), CategoryState)
    ),
)
