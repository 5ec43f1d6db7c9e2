"""OpenTelemetry traces of the API, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

A command (POST, PUT, PATCH, DELETE) gets a server span, and each append to the log inside
it an ``append`` child span. The command span's ids come from the request id, which is the
events' ``correlation`` (:mod:`events.trace_context`): its trace id *is* the correlation
and its span id the UUID's low 64 bits. That is how the trace travels in the envelope: a
projector reading the entry names the command span, and its apply span joins the trace.
A request id that is no UUID (a caller's own ``X-Request-ID``) gives a random trace.
"""

from __future__ import annotations

import contextvars
import functools
from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from app.settings import Settings
from events.trace_context import trace_ids

COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_wanted: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "streamshop_trace_ids", default=None
)


class CorrelatedIds(RandomIdGenerator):
    """Random ids, except for the one span started under :func:`_with_ids`: it takes the
    trace and span id the request id names."""

    def generate_trace_id(self) -> int:
        wanted = _wanted.get()
        if wanted and "trace" in wanted:
            return wanted.pop("trace")
        return super().generate_trace_id()

    def generate_span_id(self) -> int:
        wanted = _wanted.get()
        if wanted and "span" in wanted:
            return wanted.pop("span")
        return super().generate_span_id()


def tracer_provider(
    settings: Settings, exporter: SpanExporter | None = None, service: str = "streamshop-api"
) -> TracerProvider | None:
    """A provider exporting to ``exporter`` (tests: the SDK's in-memory one), else over
    OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``None`` (tracing off) with neither."""
    if exporter is None and not settings.otel_endpoint:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), id_generator=CorrelatedIds()
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and its headers) itself.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def tracer_of(state: Any) -> Tracer | None:
    return getattr(state, "tracer", None)


class TracingMiddleware(ASGIMiddleware):
    """The command span: named ``<METHOD> <route>``, its status from the response."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        tracer = tracer_of(scope["app"].state)
        method = scope.get("method", "")
        if tracer is None or method not in COMMAND_METHODS:
            await next_app(scope, receive, send)
            return
        rid = str(scope.get("state", {}).get("request_id", ""))
        ids = trace_ids(rid)
        token = _wanted.set({"trace": ids[0], "span": ids[1]} if ids else None)
        route = scope.get("path_template") or scope.get("path", "")
        try:
            with tracer.start_as_current_span(
                f"{method} {route}",
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": method,
                    "http.route": route,
                    "streamshop.request_id": rid,
                },
            ) as span:
                _wanted.set(None)

                async def traced_send(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        status = int(message["status"])
                        span.set_attribute("http.response.status_code", status)
                        if status >= 500:
                            span.set_status(Status(StatusCode.ERROR))
                    await send(message)

                await next_app(scope, receive, traced_send)
        finally:
            _wanted.reset(token)


def trace_appends(store: Any, tracer: Tracer) -> None:
    """Each ``store.append`` in an ``append`` span (a child of the command span)."""
    append = store.append

    @functools.wraps(append)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        with tracer.start_as_current_span("append", kind=SpanKind.CLIENT) as span:
            span.set_attribute("db.system", "redis")
            result = await append(*args, **kwargs)
            position = getattr(result, "position", None)
            if position is not None:
                span.set_attribute("streamshop.position", str(position))
            return result

    store.append = traced
