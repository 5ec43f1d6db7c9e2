"""The one ASGI layer every HTTP request passes through: request id, clock, access line,
HTTP and command metrics.

:class:`RequestObserver` wraps the whole Litestar handler (router and exception layer
included), so the router's own 404/405 and the JWT middleware's 401 are seen too. For each
HTTP request it

* takes the caller's ``X-Request-ID`` when it is a sane token, else a fresh UUIDv7, keeps it
  in ``scope["state"]["request_id"]`` (the events' correlation), binds it to structlog's
  context for every log line of the request and puts it on the response;
* writes one access line (``request``: request id, method, route, path, status, duration)
  when the response starts;
* counts the ``streamshop_http_*`` series (requests, duration, 5xx) by route template, as
  Litestar's Prometheus plugin named them, and times commands (POST, PUT, PATCH, DELETE)
  by operation id in ``streamshop_command_seconds``, both once the response is sent.

It replaces five layers (a request-context middleware, a ``before_send`` hook, Litestar's
Prometheus middleware, a command timer, and their send wrappers): a ``POST /orders`` spent
about a fifth of its CPU passing through them (bench/PROFILE.md).
"""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from events.ids import uuid7

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Requests with these methods are commands; their handler's ``operation_id`` names them."""

UNMETERED_ROUTES = frozenset({"/metrics"})
"""Route templates left out of the HTTP series (a scrape does not count itself)."""

access_log = structlog.get_logger("app.access")


def request_id(scope: Scope) -> str:
    """The request's id: already chosen, else the caller's when it is a sane token, else a
    fresh UUIDv7 (kept in ``scope["state"]``)."""
    state = scope.setdefault("state", {})
    if rid := state.get("request_id"):
        return str(rid)
    for name, value in scope.get("headers", ()):
        if name.lower() == _HEADER_BYTES:
            candidate = value.decode("latin-1")
            if _VALID_ID.match(candidate):
                state["request_id"] = candidate
                return candidate
    state["request_id"] = rid = uuid7()
    return rid


class HttpMetrics:
    """The ``{prefix}_requests_total``, ``{prefix}_request_duration_seconds`` and
    ``{prefix}_requests_error_total`` series, labelled ``method, path, status_code,
    app_name`` like Litestar's Prometheus plugin (the dashboards query them by these names).

    They live in prometheus_client's process-wide registry, so they are created once per
    process and per prefix (:meth:`of`); the labelled children are remembered per label
    tuple, which spares prometheus_client's label lookup on every request."""

    _made: dict[tuple[str, int], HttpMetrics] = {}

    def __init__(self, prefix: str, app_name: str, registry: CollectorRegistry) -> None:
        labels = ["method", "path", "status_code", "app_name"]
        self.app_name = app_name
        self.requests = Counter(
            f"{prefix}_requests_total", "Total requests", labels, registry=registry
        )
        self.duration = Histogram(
            f"{prefix}_request_duration_seconds",
            "Request duration, in seconds",
            labels,
            registry=registry,
        )
        self.errors = Counter(
            f"{prefix}_requests_error_total", "Total errors in requests", labels, registry=registry
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @classmethod
    def of(cls, prefix: str, app_name: str, registry: CollectorRegistry = REGISTRY) -> HttpMetrics:
        key = (prefix, id(registry))
        made = cls._made.get(key)
        if made is None:
            made = cls._made[key] = cls(prefix, app_name, registry)
        return made

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        children = self._children.get(key)
        if children is None:
            values = (method, path, str(status), self.app_name)
            children = self._children[key] = (
                self.requests.labels(*values),
                self.duration.labels(*values),
            )
        children[0].inc()
        children[1].observe(seconds)
        if status >= 500:
            self.errors.labels(method, path, str(status), self.app_name).inc()


class RequestObserver:
    """Pure ASGI wrapper of the app's handler (see the module docstring)."""

    def __init__(self, app: ASGIApp, http: HttpMetrics) -> None:
        self.app = app
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        header = (_HEADER_BYTES, rid.encode("latin-1"))
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
                access_log.info(
                    "request",
                    request_id=rid,
                    method=scope.get("method"),
                    route=scope.get("path_template") or scope.get("path"),
                    path=scope.get("path"),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            self._measure(scope, status, time.perf_counter() - started)

    def _measure(self, scope: Scope, status: int, seconds: float) -> None:
        """The HTTP series for a routed request (an unrouted path would be a label per raw
        path), and the command histogram for a command's handler."""
        route = scope.get("path_template")
        if route is None or route in UNMETERED_ROUTES:
            return
        method = scope["method"]
        self.http.observe(method, route, status, seconds)
        if method not in COMMAND_METHODS:
            return
        handler = scope.get("route_handler")
        command = getattr(handler, "operation_id", None) or getattr(handler, "name", None)
        metrics = getattr(scope["app"].state, "metrics", None)
        if metrics is not None and isinstance(command, str):
            outcome = "ok" if status < 400 else "refused" if status < 500 else "error"
            metrics.command_seconds.labels(command, outcome).observe(seconds)
