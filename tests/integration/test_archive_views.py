"""Every reader of the log reads archive plus live as one log: rebuild, ``verify`` of each
view, ``verify state``, export and the live projectors' catch-up all see every entry."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings
from events.store import EventStore
from tests.integration.test_export import lake_entries
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
    view_size,
)
from workers.archive import ArchiveOptions, archive
from workers.export import ExportOptions, export
from workers.rebuild import RebuildOptions, rebuild_views
from workers.state import rebuild_state, verify_state
from workers.verify import verify_view
from workers.views import VIEWS, ViewPointers


async def archived_shop(settings: Settings, store: EventStore, archive_dir: Path) -> int:
    """A shop whose log is archived but for 10 entries per partition; returns its size."""
    shop = Shop(store)
    await shop.seed(accounts=6, products=6)
    await shop.run(160)
    report = await archive(settings, ArchiveOptions(to=str(archive_dir), keep=10, segment_rows=40))
    assert report.entries > 0
    for p in range(store.keys.partitions):
        assert await store.redis.xlen(store.keys.log(p)) <= 10
    return await store.count()


async def test_views_rebuilt_over_archive_plus_live_verify_and_export_as_before(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=6, products=6)
    await shop.run(160)
    async with live_projector(settings) as runner:
        await eventually(lambda: caught_up(store, runner), within=60, what="the live views")
    await rebuild_state(store)  # the shop appends logins by hand, without their state
    assert (await verify_state(store)).ok
    total = await store.count()
    await export(settings, ExportOptions(to=str(tmp_path / "before"), warehouse=False), quiet=True)

    report = await archive(settings, ArchiveOptions(to=str(tmp_path / "archive"), keep=10))
    assert report.entries == total - sum(
        [await store.redis.xlen(store.keys.log(p)) for p in range(store.keys.partitions)]
    )
    assert await store.count() == total

    await rebuild_views(settings, VIEWS, RebuildOptions(batch=50), quiet=True)
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    assert await view_size(settings, pointers, "audit") == total  # one row per entry
    for name in VIEWS:
        result = await verify_view(settings, name, batch=50)
        assert result.ok, (name, result.differences)
        assert result.counts and all(a == b for a, b in result.counts.values())
    state = await verify_state(store)
    assert state.ok, state.differences
    assert state.events == total

    await export(settings, ExportOptions(to=str(tmp_path / "after"), warehouse=False), quiet=True)
    assert sorted(lake_entries(tmp_path / "after")) == sorted(lake_entries(tmp_path / "before"))


async def test_a_projector_started_after_archiving_catches_up_from_the_archive(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    total = await archived_shop(settings, store, tmp_path / "archive")

    async with live_projector(settings) as runner:
        await eventually(lambda: caught_up(store, runner), within=90, what="the live views")
    pointers = ViewPointers(store.redis, settings.redis.prefix)
    assert await view_size(settings, pointers, "audit") == total
    for name in VIEWS:
        result = await verify_view(settings, name, batch=50)
        assert result.ok, (name, result.differences)
