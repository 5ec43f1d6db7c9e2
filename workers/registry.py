"""The projections the runtime knows by name, and how each is built from ``Settings``.

A factory takes the settings and returns an *async context manager* that yields a ready
:class:`~projections.base.Projection` and closes its clients on exit::

    @asynccontextmanager
    async def read_models(settings: Settings) -> AsyncIterator[Projection]:
        client = AsyncMongoClient(settings.mongo.url)
        try:
            yield ReadModelsProjection(client[settings.mongo.database])
        finally:
            await client.close()

Registering one is one line in ``PROJECTIONS``. Anything not registered can still be named
as ``"package.module:factory"`` (tests run their own projections through the real CLI).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from projections.base import Projection
from workers.views import VIEWS, versioned

if TYPE_CHECKING:  # workers/ reaches app/ only through the CLI, which passes Settings in
    from app.settings import Settings

ProjectionFactory = Callable[["Settings"], AbstractAsyncContextManager[Projection]]

PROJECTIONS: dict[str, str | ProjectionFactory] = {
    "read_models": "projections.read_models.factory:read_models",
    "audit": "projections.audit:audit_projection",
    "warehouse": "projections.warehouse:warehouse_projection",
}
"""Name → factory, or the factory's ``"module:callable"`` path (imported only when used)."""


class UnknownProjection(LookupError):
    """A name that is neither registered nor a ``module:callable`` path."""


def _import(spec: str) -> ProjectionFactory:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownProjection(f"cannot load projection factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise UnknownProjection(f"{spec!r} is not callable")
    return factory


def factory_for(name: str) -> ProjectionFactory:
    """The factory for a registered name or a ``module:callable`` spec."""
    entry = PROJECTIONS.get(name)
    if entry is None:
        if ":" not in name:
            known = ", ".join(sorted(PROJECTIONS)) or "none registered"
            raise UnknownProjection(f"unknown projection {name!r} (known: {known})")
        entry = name
    return _import(entry) if isinstance(entry, str) else entry


@asynccontextmanager
async def open_projections(
    settings: Settings, names: Sequence[str] | None = None, *, upgrade: bool = True
) -> AsyncIterator[list[Projection]]:
    """Build the named projections (all registered ones when ``names`` is empty), run their
    ``setup()``, and close them all on exit.

    ``upgrade``: first rebuild and switch every versioned view whose live version an older
    version of its projection built (:func:`workers.rebuild.upgrade_views`), so ``setup``
    and ``apply`` never run new code on an old schema. Without it such a view is refused
    (:class:`~projections.identity.ViewVersionMismatch`).
    """
    chosen = list(names) if names else list(PROJECTIONS)
    factories = [factory_for(name) for name in chosen]
    if upgrade:
        from workers.rebuild import upgrade_views  # rebuild itself imports this module

        await upgrade_views(settings, chosen)
    async with AsyncExitStack() as stack:
        projections = [
            # A versioned view follows its pointer (``streamshop rebuild`` switches it).
            await stack.enter_async_context(
                versioned(name, f, settings) if name in VIEWS else f(settings)
            )
            for name, f in zip(chosen, factories, strict=True)
        ]
        for projection in projections:
            await projection.setup()
        yield projections
