"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException
from redis.exceptions import RedisError

from app.auth import PUBLIC
from app.problems import problem_responses
from app.services import services

READY_VIEW_CHECK_S = 0.5
"""How long ``/ready`` looks for a view of another log; a view store that is down must not
make the probe slow (commands do not need it). Once a view is known to be this log's it is
not looked at again, so this costs nothing on a running system."""


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
    """Redis answers and the append function is loaded: commands can be served; and no view
    was built from another log (``projections.identity``)."""
    store = services(state).store
    try:
        await store.redis.ping()
        loaded = await store.functions_loaded()
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableException(f"Redis is unreachable: {type(exc).__name__}") from exc
    if not loaded:
        raise ServiceUnavailableException("the append function is not loaded")
    side = state.views.get("read_side")
    refusal = None
    if side is not None:
        with contextlib.suppress(TimeoutError):  # a view store that hangs is not our answer
            refusal = await asyncio.wait_for(side.refusal(), READY_VIEW_CHECK_S)
    if refusal is not None:
        raise ServiceUnavailableException(refusal)
    return Health("ready")
