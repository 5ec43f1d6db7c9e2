"""Request correlation and access logging: an ``X-Request-ID`` on every response and one
structlog JSON line per request (request id, route, status, duration)."""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from events.ids import uuid7

HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

access_log = structlog.get_logger("app.access")


def _request_id(scope: Scope) -> str:
    """The caller's id when it is a sane token, otherwise a fresh UUIDv7."""
    state = scope.setdefault("state", {})
    if rid := state.get("request_id"):
        return str(rid)
    for name, value in scope.get("headers", []):
        if name.decode("latin-1").lower() == HEADER:
            candidate = value.decode("latin-1")
            if _VALID_ID.match(candidate):
                state["request_id"] = candidate
                return candidate
    state["request_id"] = rid = uuid7()
    return rid


class RequestContextMiddleware(ASGIMiddleware):
    """Starts the request clock and binds the request id to structlog's context, so every
    log line of the handler carries it."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope.setdefault("state", {})["started"] = time.perf_counter()
        rid = _request_id(scope)
        with structlog.contextvars.bound_contextvars(request_id=rid):
            await next_app(scope, receive, send)


async def stamp_response(message: Message, scope: Scope) -> None:
    """``before_send`` hook: runs for every response, also the router's 404/405 that never
    reach a middleware."""
    if scope.get("type") != "http" or message["type"] != "http.response.start":
        return
    rid = _request_id(scope)
    MutableScopeHeaders.from_message(message)[HEADER] = rid
    state: dict[str, Any] = scope.get("state", {})
    started = state.get("started")
    duration = (time.perf_counter() - started) * 1000 if started else 0.0
    access_log.info(
        "request",
        request_id=rid,
        method=scope.get("method"),
        route=scope.get("path_template") or scope.get("path"),
        path=scope.get("path"),
        status=message["status"],
        duration_ms=round(duration, 2),
    )
