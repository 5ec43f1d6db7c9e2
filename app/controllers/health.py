"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException
from redis.exceptions import RedisError

from app.auth import PUBLIC
from app.metrics import group_lags, lag_seconds
from app.problems import problem_responses
from app.services import services

READY_VIEW_CHECK_S = 0.5
"""How long ``/ready`` looks for a view of another log; a view store that is down must not
make the probe slow (commands do not need it). Once a view is known to be this log's it is
not looked at again, so this costs nothing on a running system."""

CHECK_TIMEOUT_SECONDS = 2.0
"""A store that does not answer a probe within this time counts as unreachable."""


class Health(msgspec.Struct, frozen=True):
    status: str


@get(
    "/health", opt=PUBLIC, security=[{}], tags=["ops"], operation_id="health", sync_to_thread=False
)
def health() -> Health:
    """The process is up (it does not look at Redis)."""
    return Health("ok")


@get(
    "/ready",
    opt=PUBLIC,
    security=[{}],
    tags=["ops"],
    operation_id="ready",
    responses=problem_responses(503),
)
async def ready(state: State) -> Health:
    """Redis (with the append function), MongoDB and PostgreSQL answer, and no projection is
    more than ``READY_MAX_LAG_SECONDS`` behind: 200. Otherwise 503 naming every reason."""
    svc = services(state)
    store = svc.store
    problems: list[str] = []
    try:
        await _within(store.redis.ping())
        if not await _within(store.functions_loaded()):
            problems.append("the append function is not loaded")
    except (RedisError, OSError, TimeoutError) as exc:
        raise ServiceUnavailableException(f"Redis is unreachable: {type(exc).__name__}") from exc
    side = svc.views.get("read_side")
    if side is not None:
        try:
            await _within(side.db.command("ping"))
        except Exception as exc:
            problems.append(f"MongoDB is unreachable: {type(exc).__name__}")
        try:
            await _within(side.pool.fetchval("SELECT 1"))
        except Exception as exc:
            problems.append(f"PostgreSQL is unreachable: {type(exc).__name__}")
    limit = svc.settings.ready_max_lag_seconds
    if limit > 0:
        try:
            lags = lag_seconds(await _within(group_lags(store.redis, store.keys)))
        except (RedisError, OSError, TimeoutError) as exc:
            raise ServiceUnavailableException(
                f"Redis is unreachable: {type(exc).__name__}"
            ) from exc
        behind = {name: age for name, age in sorted(lags.items()) if age > limit}
        problems.extend(
            f"projection {name} is {age:.1f}s behind (limit {limit:g}s)"
            for name, age in behind.items()
        )
    if side is not None:
        refusal = None
        with contextlib.suppress(TimeoutError):  # a view store that hangs is not our answer
            refusal = await asyncio.wait_for(side.refusal(), READY_VIEW_CHECK_S)
        if refusal is not None:
            problems.append(refusal)
    if problems:
        raise ServiceUnavailableException("; ".join(problems))
    return Health("ready")


async def _within(call: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(call, CHECK_TIMEOUT_SECONDS)
