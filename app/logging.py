"""structlog configuration shared by the API and the workers: JSON lines or console output."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

_encoder = msgspec.json.Encoder()


def _dumps(obj: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """structlog's JSON serializer: msgspec instead of ``json.dumps`` (one C call per line on
    the request path); anything msgspec cannot encode goes through structlog's fallback."""
    try:
        return _encoder.encode(obj).decode()
    except (TypeError, msgspec.EncodeError):
        return msgspec.json.encode(obj, enc_hook=default).decode()


def configure_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    """One JSON object per line (``fmt='json'``) or coloured console lines, on stderr.

    uvicorn's own access log is silenced: the API writes one structured access line per
    request (:mod:`app.middleware`), so a second, unstructured line would double the cost
    and the volume of the request log (whether or not ``--no-access-log`` was given)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
