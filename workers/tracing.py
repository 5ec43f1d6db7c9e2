"""The projector's apply span, joined to the trace of the command that wrote the events.

An event's ``correlation`` names its command's span (:mod:`events.trace_context`). The span
of one ``apply`` is a child of the first event's command span, so that command's trace runs
from the HTTP request to the view; it *links* to the command span of every event in the
batch, so a batch folding many commands is found from each of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, Tracer

from events.codec import RecordedEvent
from events.trace_context import span_context

MAX_LINKS = 64

__all__ = ["Tracer", "apply_span", "global_tracer"]


def global_tracer() -> Tracer | None:
    """The process's tracer when a provider was installed (``streamshop`` does it when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set), else ``None``: no span work at all."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    return trace.get_tracer("streamshop.projector")


@contextlib.contextmanager
def apply_span(
    tracer: Tracer | None, projection: str, partition: int, events: Sequence[RecordedEvent]
) -> Iterator[None]:
    if tracer is None:
        yield
        return
    contexts = []
    seen: set[tuple[int, int]] = set()
    for event in events:
        ctx = span_context(event.correlation)
        if ctx is not None and (ctx.trace_id, ctx.span_id) not in seen:
            seen.add((ctx.trace_id, ctx.span_id))
            contexts.append(ctx)
    parent = trace.set_span_in_context(NonRecordingSpan(contexts[0])) if contexts else None
    with tracer.start_as_current_span(
        f"apply {projection}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=[Link(ctx) for ctx in contexts[:MAX_LINKS]],
        attributes={
            "streamshop.projection": projection,
            "streamshop.partition": partition,
            "streamshop.events": len(events),
            "streamshop.first_entry": events[0].entry_id if events else "",
        },
    ):
        yield
