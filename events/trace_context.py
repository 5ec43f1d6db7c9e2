"""An event's ``correlation`` read as an OpenTelemetry span context.

With tracing on, the API makes a command's trace id *be* its request id (a UUID, the
events' ``correlation``) and the command span's id its low 64 bits, so a projector can name
that span from the envelope alone: no extra envelope field, and a log entry written before
tracing was switched on, or by a producer whose correlation is no UUID, simply has no span.
"""

from __future__ import annotations

import uuid

from opentelemetry.trace import SpanContext, TraceFlags

LOW_64 = (1 << 64) - 1


def trace_ids(correlation: str) -> tuple[int, int] | None:
    """(trace id, span id) named by a UUID correlation; ``None`` for anything else."""
    try:
        value = uuid.UUID(correlation).int
    except (ValueError, AttributeError, TypeError):
        return None
    if value == 0:
        return None
    return value, (value & LOW_64) or 1


def span_context(correlation: str) -> SpanContext | None:
    """The command span an event's ``correlation`` names, as a remote, sampled context."""
    ids = trace_ids(correlation)
    if ids is None:
        return None
    trace_id, span_id = ids
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
