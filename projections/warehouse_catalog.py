"""The warehouse's seller and category tables (issue 15): ``dim_seller``,
``product_seller`` and the type-2 ``dim_category``, as pure folds plus their writes.

Kept apart from :mod:`projections.warehouse`, which routes the events here and calls
:func:`write_catalog` inside its batch transaction (checkpoint and ``aggregate_versions``
guard included): category events are ``VERSIONED``, so each is applied once, in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg

from events.codec import RecordedEvent
from events.types import CategoryCreated, CategoryDeleted, CategoryRenamed

CATEGORY_COLUMNS = (
    "slug",
    "version",
    "name",
    "parent",
    "valid_from",
    "valid_to",
    "is_current",
    "deleted",
    "opened_by_seq",
)


@dataclass(frozen=True, slots=True)
class CategoryVersion:
    slug: str
    version: int
    name: str
    parent: str | None
    valid_from: datetime
    valid_to: datetime | None
    is_current: bool
    deleted: bool
    opened_by_seq: int

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in CATEGORY_COLUMNS)


@dataclass(slots=True)
class CatalogRows:
    """What a batch adds to the seller and category tables."""

    sellers: list[tuple[Any, ...]] = field(default_factory=list)
    product_sellers: list[tuple[str, str]] = field(default_factory=list)
    category_events: list[RecordedEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sellers or self.product_sellers or self.category_events)


def fold_categories(
    current: dict[str, CategoryVersion], events: Iterable[RecordedEvent]
) -> dict[tuple[str, int], CategoryVersion]:
    """Pure SCD-2 fold: a rename closes the current version (``valid_to``) and opens the
    next; a deletion closes it for good; a re-creation opens the next. Returns the versions
    to write."""
    state = dict(current)
    out: dict[tuple[str, int], CategoryVersion] = {}

    def put(version: CategoryVersion) -> None:
        state[version.slug] = version
        out[(version.slug, version.version)] = version

    for rec in events:
        match rec.event:
            case CategoryCreated() as e:
                before = state.get(e.slug)
                if before is not None:
                    put(replace(before, is_current=False))
                put(
                    CategoryVersion(
                        slug=e.slug,
                        version=before.version + 1 if before is not None else 1,
                        name=e.name,
                        parent=e.parent,
                        valid_from=rec.at,
                        valid_to=None,
                        is_current=True,
                        deleted=False,
                        opened_by_seq=rec.seq,
                    )
                )
            case CategoryRenamed() as e if e.slug in state:
                cur = state[e.slug]
                put(replace(cur, valid_to=rec.at, is_current=False))
                put(
                    replace(
                        cur,
                        version=cur.version + 1,
                        name=e.name,
                        valid_from=rec.at,
                        valid_to=None,
                        is_current=True,
                        opened_by_seq=rec.seq,
                    )
                )
            case CategoryDeleted() as e if e.slug in state:
                put(replace(state[e.slug], valid_to=rec.at, deleted=True))
            case _:
                pass
    return out


async def write_catalog(conn: asyncpg.Connection, s: str, rows: CatalogRows) -> None:
    """Write ``rows`` into schema ``s`` (quoted) in the caller's transaction."""
    if rows.sellers:
        await conn.executemany(
            f"INSERT INTO {s}.dim_seller VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", rows.sellers
        )
    if rows.product_sellers:
        await conn.executemany(
            f"INSERT INTO {s}.product_seller VALUES ($1, $2) ON CONFLICT DO NOTHING",
            rows.product_sellers,
        )
    if rows.category_events:
        slugs = sorted({rec.event.slug for rec in rows.category_events})  # type: ignore[union-attr]
        found = await conn.fetch(
            f"SELECT DISTINCT ON (slug) {', '.join(CATEGORY_COLUMNS)} FROM {s}.dim_category"
            " WHERE slug = ANY($1::text[]) ORDER BY slug, version DESC",
            slugs,
        )
        current = {r["slug"]: CategoryVersion(**dict(r)) for r in found}
        versions = fold_categories(current, rows.category_events)
        if versions:
            updates = ", ".join(f"{c} = excluded.{c}" for c in CATEGORY_COLUMNS[2:])
            marks = ", ".join(f"${i}" for i in range(1, len(CATEGORY_COLUMNS) + 1))
            await conn.executemany(
                f"INSERT INTO {s}.dim_category ({', '.join(CATEGORY_COLUMNS)}) VALUES ({marks})"
                f" ON CONFLICT (slug, version) DO UPDATE SET {updates}",
                [v.row() for v in versions.values()],
            )
