"""Versioned views: which version of each view is live (a pointer in Redis), the pause a
rebuild sets around its switch, and the projection wrapper that follows the pointer.

A view (``read_models``, ``audit``, ``warehouse``) can exist in several versions side by
side: the base one (MongoDB collections ``accounts``…, PostgreSQL schemas ``audit`` /
``dw``) and versions a rebuild made (``accounts_<v>``…, ``audit_<v>``, ``dw_<v>``). Readers
and the live projector resolve the version through ``{prefix}:view:{<name>}``; absent means
the base. A rebuild fills a new version from the log while the old one keeps serving, then
switches the pointer with one atomic script (see :mod:`workers.rebuild`).

Why the pause: the live projector must never apply, to the *old* version only, an entry the
new version has not seen. Around its final catch-up the rebuild sets
``{prefix}:view:{<name>}:pause`` (with a TTL it keeps refreshing, so a killed rebuild cannot
pause the live view for long); :class:`VersionedProjection` reads pointer and pause in one
``MGET`` before every apply and raises :class:`~projections.base.SinkUnavailable` while
paused, so the runner backs off, keeps its lease and acknowledges nothing. Entries it read
before the pause was set are in the log before the rebuild's final catch-up starts, so the
new version has them too; the switch succeeds only while the rebuild's own pause is still
in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog
from pymongo import AsyncMongoClient
from redis.exceptions import RedisError

from events.codec import RecordedEvent
from events.identity import log_holds, log_identity
from events.keys import Keys
from projections.base import Projection, SinkUnavailable, version_of
from projections.identity import (
    MongoMeta,
    PostgresMeta,
    ViewVersionMismatch,
    bind,
    built_version,
    meta_of,
)
from projections.read_models.projection import Collections
from projections.views import schema_name
from workers.dlq import redrive_apply
from workers.leases import DELETE_IF_HELD, RENEW_IF_HELD

log = structlog.get_logger("workers.views")

VIEWS: tuple[str, ...] = ("read_models", "audit", "warehouse")
"""The views that are versioned (and that ``rebuild`` / ``verify`` know)."""

BASE = ""
"""The version id of the base names (no pointer set)."""

ViewFactory = Callable[..., AbstractAsyncContextManager[Projection]]
"""A registry factory: ``factory(settings)`` for the base, ``factory(settings, version=v)``."""

_SWITCH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local old = redis.call('GET', KEYS[2])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('SET', KEYS[3], old or '')
redis.call('DEL', KEYS[1])
return 1
"""
"""KEYS: pause, pointer, previous. ARGV: pause token, new version. Switches only while the
caller's pause holds (so no live apply can have slipped past the final catch-up)."""


def new_version() -> str:
    """A fresh version id: sortable by creation time, a plain lower-case identifier."""
    return f"v{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(3)}"


PG_SCHEMAS: dict[str, str] = {"audit": "audit", "warehouse": "dw"}
"""PostgreSQL views → their base schema; a version lives in ``<base>_<version>``."""


def label(version: str | None) -> str:
    return version or "base"


def pg_schema(name: str, version: str) -> str:
    base = PG_SCHEMAS[name]
    return schema_name(base if version == BASE else f"{base}_{version}")


def mongo_collections(version: str) -> Collections:
    return Collections() if version == BASE else Collections.suffixed(f"_{version}")


async def drop_version(settings: Any, name: str, version: str) -> None:
    """Drop one version of a view from its store (a no-op if it is not there).

    A version recorded for another log is kept: two logs may share one database (the
    other log's base view is this log's "previous" after its first rebuild), and this log
    must never destroy that one.
    """
    async with _log_of(settings, None) as (_, log_id):
        if name == "read_models":
            client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo.url)
            try:
                db = client[settings.mongo.database]
                names = mongo_collections(version)
                if _kept(await MongoMeta(db, names).recorded(), log_id, name, version):
                    return
                for collection in (
                    names.accounts,
                    names.products,
                    names.orders,
                    names.carts,
                    names.categories,
                    names.checkpoints,
                    names.meta,
                    names.redrives,
                    names.sessions,
                ):
                    await db.drop_collection(collection)
            finally:
                await client.close()
            return
        conn = await asyncpg.connect(settings.postgres.url)
        try:
            schema = pg_schema(name, version)
            if _kept(await PostgresMeta(conn, schema).recorded(), log_id, name, version):
                return
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def _kept(other: str | None, log_id: str, name: str, version: str) -> bool:
    """Whether a version to drop is another log's, and so is kept (and said so)."""
    if other is not None and other != log_id:
        log.warning("view_version_of_other_log_kept", view=name, version=label(version), log=other)
        return True
    return False


@asynccontextmanager
async def _log_of(
    settings: Any, redis: aioredis.Redis | None
) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A Redis client (``redis``, or one of our own closed on exit) and the log's identity."""
    own = redis is None
    client = settings.redis.connect() if redis is None else redis
    try:
        yield client, await log_identity(client, settings.redis.keys)
    finally:
        if own:
            with contextlib.suppress(RedisError):
                await client.aclose()


class RebuildBusy(RuntimeError):
    """Another rebuild of the same view holds its lock."""


@dataclass(frozen=True, slots=True)
class ViewState:
    version: str
    """The live version (:data:`BASE` for the base names)."""
    paused: bool


class ViewPointers:
    """The Redis keys of versioned views under one prefix: pointer, pause, previous version,
    the versions a rebuild created (so abandoned ones can be dropped) and the rebuild lock.

    Keys of one view share the hash tag ``{<name>}``, so the switch script is cluster-safe.
    """

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._switch = redis.register_script(_SWITCH)
        self._refresh = redis.register_script(RENEW_IF_HELD)
        self._release = redis.register_script(DELETE_IF_HELD)

    def key(self, name: str, suffix: str = "") -> str:
        return Keys(prefix=self.prefix).view(name, suffix)

    async def state(self, name: str) -> ViewState:
        """Pointer and pause of ``name`` in one round trip (the live path calls this per batch)."""
        pointer, pause = await self.redis.mget(self.key(name), self.key(name, ":pause"))
        return ViewState(version=_text(pointer) or BASE, paused=pause is not None)

    async def current(self, name: str) -> str:
        return _text(await self.redis.get(self.key(name))) or BASE

    async def currents(self, names: Sequence[str] = VIEWS) -> dict[str, str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(self.key(name))
            replies = await pipe.execute()
        return {name: _text(raw) or BASE for name, raw in zip(names, replies, strict=True)}

    async def set(self, name: str, version: str) -> None:
        """Point ``name`` at ``version`` unconditionally (initial set-up; rebuilds use switch)."""
        if version == BASE:
            await self.redis.delete(self.key(name))
        else:
            await self.redis.set(self.key(name), version)

    async def previous(self, name: str) -> str | None:
        """The version the last switch replaced (``None``: none kept)."""
        raw = await self.redis.get(self.key(name, ":previous"))
        return None if raw is None else (_text(raw) or BASE)

    async def forget_previous(self, name: str) -> None:
        await self.redis.delete(self.key(name, ":previous"))

    # -- versions a rebuild created --------------------------------------------------------

    async def register(self, name: str, version: str) -> None:
        """Recorded *before* anything is created, so a killed rebuild's leftovers are found."""
        await self.redis.sadd(self.key(name, ":versions"), version)

    async def unregister(self, name: str, version: str) -> None:
        await self.redis.srem(self.key(name, ":versions"), version)

    async def registered(self, name: str) -> set[str]:
        return {_text(v) or BASE for v in await self.redis.smembers(self.key(name, ":versions"))}

    # -- pause and switch ------------------------------------------------------------------

    async def pause(self, name: str, token: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(self.key(name, ":pause"), token, nx=True, px=ttl_ms))

    async def refresh_pause(self, name: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._refresh(keys=[self.key(name, ":pause")], args=[token, ttl_ms]))

    async def unpause(self, name: str, token: str) -> None:
        await self._release(keys=[self.key(name, ":pause")], args=[token])

    async def switch(self, name: str, version: str, token: str) -> bool:
        """Point readers and the live projector at ``version``, only if our pause still holds."""
        keys = [self.key(name, ":pause"), self.key(name), self.key(name, ":previous")]
        return bool(await self._switch(keys=keys, args=[token, version]))

    # -- the rebuild lock ------------------------------------------------------------------

    async def lock(self, name: str, ttl_ms: int, wait_s: float) -> str:
        """Take the rebuild lock of ``name``; returns the holder value to release it with.

        The value names host and pid: a lock left by a killed rebuild on this host is taken
        over at once, one left elsewhere when its TTL runs out.
        """
        key = self.key(name, ":rebuild")
        holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        deadline = time.monotonic() + wait_s
        while True:
            if await self.redis.set(key, holder, nx=True, px=ttl_ms):
                return holder
            current = _text(await self.redis.get(key))
            if current and _dead_local_holder(current):
                log.warning("rebuild_lock_taken_over", view=name, dead_holder=current)
                await self._release(keys=[key], args=[current])
                continue
            if time.monotonic() > deadline:
                raise RebuildBusy(f"a rebuild of {name} is running ({current})")
            await asyncio.sleep(0.2)

    async def refresh_lock(self, name: str, holder: str, ttl_ms: int) -> bool:
        return bool(await self._refresh(keys=[self.key(name, ":rebuild")], args=[holder, ttl_ms]))

    async def unlock(self, name: str, holder: str) -> None:
        await self._release(keys=[self.key(name, ":rebuild")], args=[holder])


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def _dead_local_holder(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid_s = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    try:
        os.kill(int(pid_s), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@asynccontextmanager
async def open_view(
    factory: ViewFactory,
    settings: Any,
    version: str,
    *,
    redis: aioredis.Redis | None = None,
    claim: bool = True,
) -> AsyncIterator[Projection]:
    """The view's projection on one version (the base names for :data:`BASE`), bound to
    this log: a version recorded for another log raises
    :class:`~projections.identity.ForeignView`; a new one is recorded as this log's
    (``claim``; verify reads the live view without writing to it)."""
    cm = factory(settings) if version == BASE else factory(settings, version=version)
    async with cm as projection:
        await bind_to_log(settings, projection, redis=redis, claim=claim)
        yield projection


async def bind_to_log(
    settings: Any, projection: Any, *, redis: aioredis.Redis | None = None, claim: bool = True
) -> str | None:
    """:func:`projections.identity.bind` for one of our projections, against this log."""
    meta = meta_of(projection)
    if meta is None:
        return None
    keys = settings.redis.keys
    try:
        async with _log_of(settings, redis) as (client, log_id):

            async def holds(positions: dict[int, str]) -> bool:
                return await log_holds(client, keys, positions)

            return await bind(
                projection.name, meta, log_id, holds, claim=claim, version=version_of(projection)
            )
    except RedisError as exc:
        raise SinkUnavailable(f"cannot read the log's identity: {exc}") from exc


async def versions_of(projection: Any) -> tuple[int | None, int]:
    """The projection version that built the view ``projection`` is on (``None``: nothing
    built yet, or a view that keeps no meta record) and the version of this code."""
    meta = meta_of(projection)
    built = None if meta is None else await built_version(meta)
    return built, version_of(projection)


async def check_built_by_this_code(projection: Any) -> None:
    """Raise :class:`~projections.identity.ViewVersionMismatch` unless the view version
    ``projection`` is on was built by this code's version of it (or is still empty)."""
    built, code = await versions_of(projection)
    if built is not None and built != code:
        where = getattr(meta_of(projection), "where", "")
        raise ViewVersionMismatch(projection.name, where, built, code)


async def live_versions(
    factory: ViewFactory, settings: Any, version: str, *, redis: aioredis.Redis | None = None
) -> tuple[int | None, int]:
    """:func:`versions_of` for ``version`` of a view, opened without writing to it."""
    async with open_view(factory, settings, version, redis=redis, claim=False) as projection:
        return await versions_of(projection)


@dataclass(slots=True)
class _Target:
    version: str
    projection: Projection
    stack: AsyncExitStack
    inflight: int = 0


@dataclass(slots=True)
class VersionedProjection:
    """The live projection of a versioned view: follows the pointer, honours the pause.

    Applies for different partitions run concurrently; a target whose version is no longer
    live is closed once its last in-flight apply has returned.
    """

    name: str
    factory: ViewFactory
    settings: Any
    pointers: ViewPointers
    _targets: dict[str, _Target] = field(default_factory=dict)
    _live: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def records_raw(self) -> bool:
        """The wrapped view's ``records_raw`` (every version is the same class; ``setup``
        has opened the live one before the runner reads anything)."""
        return any(getattr(t.projection, "records_raw", False) for t in self._targets.values())

    async def _state(self) -> ViewState:
        try:
            return await self.pointers.state(self.name)
        except RedisError as exc:
            raise SinkUnavailable(f"cannot read the {self.name} view pointer: {exc}") from exc

    @asynccontextmanager
    async def _using(self, version: str) -> AsyncIterator[Projection]:
        """The projection on ``version``, counted in flight until the block exits."""
        target = await self._target(version)
        try:
            yield target.projection
        finally:
            target.inflight -= 1
            if len(self._targets) > 1:
                await self._retire()

    async def _target(self, version: str) -> _Target:
        """Open (once) and return the target of ``version``, already counted in flight."""
        async with self._lock:
            target = self._targets.get(version)
            if target is None:
                stack = AsyncExitStack()
                try:
                    projection = await stack.enter_async_context(
                        open_view(self.factory, self.settings, version, redis=self.pointers.redis)
                    )
                    # New code never writes to an old schema (start-up rebuilt it first).
                    await check_built_by_this_code(projection)
                except BaseException:
                    await stack.aclose()
                    raise
                target = self._targets[version] = _Target(version, projection, stack)
            if self._live != version:
                if self._live is not None:
                    log.info(
                        "view_switched",
                        view=self.name,
                        old=label(self._live),
                        new=label(version),
                    )
                self._live = version
            target.inflight += 1
            return target

    async def _retire(self) -> None:
        async with self._lock:
            for version, target in list(self._targets.items()):
                if version != self._live and target.inflight == 0:
                    del self._targets[version]
                    await target.stack.aclose()

    async def setup(self) -> None:
        async with self._using((await self._state()).version) as projection:
            await projection.setup()

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        state = await self._state()
        if state.paused:
            raise SinkUnavailable(f"{self.name} is paused for a rebuild's switch")
        async with self._using(state.version) as projection:
            await projection.apply(partition, events)

    async def redrive(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        """Re-drive dead letters into the live version (see ``workers.dlq.redrive_apply``)."""
        state = await self._state()
        if state.paused:
            raise SinkUnavailable(f"{self.name} is paused for a rebuild's switch")
        async with self._using(state.version) as projection:
            await redrive_apply(projection, partition, events)

    async def advance(self, partition: int, entry_id: str) -> None:
        """Move the live version's checkpoint forward, if it can (see ``workers.dlq``)."""
        state = await self._state()
        if state.paused:
            raise SinkUnavailable(f"{self.name} is paused for a rebuild's switch")
        async with self._using(state.version) as projection:
            if (advance := getattr(projection, "advance", None)) is not None:
                await advance(partition, entry_id)

    async def checkpoint(self, partition: int) -> str | None:
        async with self._using((await self._state()).version) as projection:
            return await projection.checkpoint(partition)

    async def checkpoints(self) -> dict[int, str | None]:
        async with self._using((await self._state()).version) as projection:
            return await projection.checkpoints()  # type: ignore[attr-defined,no-any-return]

    async def aclose(self) -> None:
        async with self._lock:
            targets, self._targets = list(self._targets.values()), {}
        for target in targets:
            await target.stack.aclose()


@asynccontextmanager
async def versioned(name: str, factory: ViewFactory, settings: Any) -> AsyncIterator[Projection]:
    """Registry wrapper: the live projection of view ``name``, following its pointer."""
    redis = settings.redis.connect()
    projection = VersionedProjection(
        name, factory, settings, ViewPointers(redis, settings.redis.prefix)
    )
    try:
        yield projection
    finally:
        try:
            await projection.aclose()
        finally:
            with contextlib.suppress(RedisError):
                await redis.aclose()
