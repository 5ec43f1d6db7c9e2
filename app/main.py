"""The composition root of the API: ``create_app(settings)`` wires everything, connects nothing.

Run it with ``uvicorn --factory app.main:create_app``. Connections are made in the lifespan:
each entry of ``LIFESPANS`` is an async context manager entered at startup in order and left
at shutdown in reverse (the query API adds its read-side connections the same way).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from app.auth import build_jwt_auth
from app.auth_rate_limit import register_rate_limit_store
from app.auth_sessions import SessionStore
from app.commands.login import LoginLimits
from app.controllers import CONTROLLERS
from app.controllers.docs import local_swagger
from app.gc_tuning import tune_gc
from app.logging import configure_logging
from app.metrics import ApiMetrics, metrics_lifespan
from app.middleware import HttpMetrics, RequestObserver
from app.passwords import Passwords
from app.problems import problem_details_plugin
from app.queries import read_side_lifespan
from app.services import Services
from app.settings import Settings
from app.tracing import TracingMiddleware, trace_appends, tracer_of, tracer_provider
from app.validation import reject_lax_bodies
from events.multiplexed import Multiplexed
from events.store import EventStore, check_redis

MAX_BODY_BYTES = 1024 * 1024
"""Bodies above 1 MiB are refused with 413 before they are read into memory."""

HTTP_METRICS_PREFIX = "streamshop_http"
"""The HTTP series are ``streamshop_http_requests_total`` and so on (the dashboards' names)."""

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]

log = structlog.get_logger("app")


@asynccontextmanager
async def event_store_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Connect to Redis, refuse an unsafe one (``check_redis``), load the append function.

    The store's two calls per command (states, append) share one pipelined connection
    (:mod:`events.multiplexed`); everything else uses the redis-py client."""
    settings: Settings = app.state.settings
    redis = settings.redis.connect()
    calls = Multiplexed.serving(redis)
    try:
        await check_redis(redis)
        store = EventStore(
            redis, settings.redis.keys, calls=calls, replica_wait=settings.redis.replica_wait
        )
        await store.load_functions()
        if (tracer := tracer_of(app.state)) is not None:
            trace_appends(store, tracer)
        passwords = await asyncio.to_thread(Passwords, settings.auth)
        app.state.store = store
        app.state.services = Services(
            settings=settings,
            store=store,
            passwords=passwords,
            jwt_auth=app.state.jwt_auth,
            limits=LoginLimits(
                max_failures=settings.auth.login_max_failures,
                window_seconds=settings.auth.login_window_seconds,
            ),
            sessions=SessionStore(
                redis, settings.redis.prefix, ttl_seconds=settings.auth.refresh_ttl_seconds
            ),
            views=app.state.views,
        )
        register_rate_limit_store(app, redis, settings)
        log.info("api_started", redis=settings.redis.url, prefix=settings.redis.prefix)
        yield
    finally:
        if calls is not None:
            await calls.aclose()
        await redis.aclose()


LIFESPANS: list[Lifespan] = [event_store_lifespan, read_side_lifespan, metrics_lifespan]
"""Startup/shutdown steps, in order. Later steps may use what earlier ones put on ``app.state``."""


def create_app(
    settings: Settings | None = None,
    lifespans: Sequence[Lifespan] | None = None,
    span_exporter: SpanExporter | None = None,
) -> Litestar:
    """The app; ``span_exporter`` turns tracing on without an OTLP endpoint (tests)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_format)
    tune_gc()
    jwt_auth = build_jwt_auth(settings)
    settings.email_digest_secret()  # refuses to start without one outside dev mode
    provider: TracerProvider | None = tracer_provider(settings, span_exporter)
    app = Litestar(
        route_handlers=list(CONTROLLERS),
        state=State(
            {
                "settings": settings,
                "jwt_auth": jwt_auth,
                "views": {},
                "metrics": ApiMetrics(),
                "tracer": provider.get_tracer("streamshop.api") if provider else None,
            }
        ),
        lifespan=list(LIFESPANS if lifespans is None else lifespans),
        on_app_init=[jwt_auth.on_app_init],
        plugins=[problem_details_plugin()],
        # a span per command only when tracing is on: a layer that would do nothing costs
        middleware=[TracingMiddleware()] if provider is not None else [],
        before_request=reject_lax_bodies,
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(
            title="streamshop",
            version="0.1.0",
            description="Event-sourced shop: every command is one atomic append to the log.",
            path="/schema",
            render_plugins=[local_swagger(), ScalarRenderPlugin()],
        ),
        debug=False,
    )
    # Outside the router and its exception layer, so every response (the router's 404 and
    # 405, the JWT middleware's 401) gets a request id and an access line.
    app.asgi_handler = RequestObserver(
        app.asgi_handler, HttpMetrics.of(HTTP_METRICS_PREFIX, app_name="streamshop")
    )
    return app
