"""The baseline of ``http.orders_vs_baseline``: a bare Litestar ``POST /orders`` doing one FCALL.

Run it as the real API runs (``uvicorn --factory bench.baseline_app:create_app --workers N``,
uvloop, httptools, no access log) on the same durable Redis. Each request reads its body
and does one ``FCALL`` of our append function with a fixed request (one 2-line
``OrderBilled``, no conditions), so it pays the HTTP server, the framework's routing and one
fsynced append: the floor under which ``POST /orders`` cannot go on this stack. No auth, no
validation, no decision, no state reads, no logging. The FCALL goes through
:meth:`EventStore.fcall` on the same pipelined connection the API's store uses
(:mod:`events.multiplexed`), so both sides pay the same Redis client.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response, post

from app.gc_tuning import tune_gc
from app.settings import Settings
from events.multiplexed import Multiplexed
from events.store import APPEND_FUNCTION, Append, EventStore, Metadata

_REPLY = b'{"ok":true}'


@post("/orders", status_code=201)
async def bare_append(request: Request) -> Response[bytes]:  # type: ignore[type-arg]
    await request.body()
    state = request.app.state
    await state.store.fcall(APPEND_FUNCTION, state.fcall_keys, state.fcall_request)
    return Response(_REPLY, media_type="application/json", status_code=201)


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    from bench.append import sample_order  # the same 2-line order the append figures use

    settings = Settings.from_env()
    redis = settings.redis.connect()
    # BASELINE_CLIENT=redis-py: the FCALL through redis-py's pool instead (to compare clients)
    calls = None if os.environ.get("BASELINE_CLIENT") == "redis-py" else Multiplexed.serving(redis)
    try:
        store = EventStore(redis, settings.redis.keys, calls=calls)
        await store.load_functions()
        append = Append(events=[sample_order()], meta=Metadata(actor="bench", source="bench"))
        keys, request, _, _ = store._request(append)
        app.state.store, app.state.fcall_keys, app.state.fcall_request = store, keys, request
        yield
    finally:
        if calls is not None:
            await calls.aclose()
        await redis.aclose()


def create_app() -> Litestar:
    tune_gc()  # as the API's create_app does: same server, same process settings
    return Litestar(route_handlers=[bare_append], lifespan=[_lifespan], debug=False)
