"""Every error as ``application/problem+json`` (RFC 9457), mapped in one place.

Members: ``type`` (stable URI per kind of problem), ``title``, ``status``, ``detail``,
``field`` (the input at fault, when one is) and, for validation errors, ``invalid-params``
(``[{name, reason}]``). Domain errors add their context (``product_id``, ``line``...).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import structlog
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from app.commands.errors import DomainError, RateLimited
from app.validation import NO_NUL, NUL_REASON
from events.connection import OUTAGE

PROBLEM_BASE = "https://streamshop.dev/problems/"
MEDIA_TYPE = "application/problem+json"

log = structlog.get_logger("app.problems")


class InvalidParam(msgspec.Struct, frozen=True):
    name: str
    reason: str


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """An error answer (RFC 9457). ``field`` names the input at fault, when there is one."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    invalid_params: list[InvalidParam] | None = msgspec.field(default=None, name="invalid-params")


_STATUS_SLUGS: dict[int, tuple[str, str]] = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}

_BACKTICK = re.compile(r"`([^`]+)`")


def _problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    invalid_params: list[dict[str, str]] | None = None,
    **members: Any,
) -> ProblemDetailsException:
    extra: dict[str, Any] = {k: v for k, v in members.items() if v is not None}
    if invalid_params:
        extra["invalid-params"] = invalid_params
    if field is not None:
        extra["field"] = field
    return ProblemDetailsException(
        status_code=status,
        type_=PROBLEM_BASE + slug,
        title=title,
        detail=detail,
        headers=headers,
        extra=extra or None,
    )


def _param_name(item: dict[str, Any]) -> str:
    """The field a Litestar/msgspec validation message is about, as ``a.b[0].c``.

    Unknown and missing fields are reported against their parent object; the field's own
    name is then inside the message's backticks.
    """
    key = str(item.get("key") or "")
    message = str(item.get("message") or "")
    key = "" if key == "data" else key.removeprefix("data.")
    if "unknown field" in message or "missing required" in message:
        match = _BACKTICK.search(message)
        if match:
            return f"{key}.{match.group(1)}" if key else match.group(1)
    return key or "body"


def _reason(item: dict[str, Any]) -> str:
    message = str(item.get("message") or "invalid")
    if repr(NO_NUL) in message:  # a ``pattern=NO_NUL`` parameter: say why, not the regex
        return NUL_REASON
    return "the request body is missing" if message == "'data'" else message


def validation_problem(exc: ValidationException) -> ProblemDetailsException:
    items = (
        [i for i in (exc.extra or []) if isinstance(i, dict)] if isinstance(exc.extra, list) else []
    )
    params = [InvalidParam(_param_name(i), _reason(i)) for i in items]
    if not params:
        return _problem(400, "malformed-request", "Malformed request", str(exc.detail))
    detail = "; ".join(f"{p.name}: {p.reason}" for p in params)
    return _problem(
        400,
        "validation-error",
        "Invalid request",
        detail,
        field=params[0].name,
        invalid_params=[msgspec.to_builtins(p) for p in params],
    )


def http_problem(exc: HTTPException) -> ProblemDetailsException:
    """Framework errors (401 from the JWT middleware, 404, 405, 413, malformed JSON...)."""
    if isinstance(exc, ProblemDetailsException):
        return exc
    if isinstance(exc, ValidationException):
        return validation_problem(exc)
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    if exc.status_code == 400:
        slug, title = "malformed-request", "Malformed request"
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return _problem(exc.status_code, slug, title, str(exc.detail), headers=headers or None)


def domain_problem(exc: DomainError) -> ProblemDetailsException:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    if exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return _problem(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        field=exc.field,
        headers=headers,
        **exc.extra,
    )


def internal_problem(exc: Exception) -> ProblemDetailsException:
    """Anything unforeseen: logged with its traceback, answered without internals."""
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return _problem(500, "internal-error", "Internal server error", "an unexpected error occurred")


RETRY_AFTER_OUTAGE_S = 1
"""Seconds a client is told to wait (``Retry-After``) when Redis is out."""


def outage_problem(exc: Exception) -> ProblemDetailsException:
    """Redis out (:data:`events.connection.OUTAGE`): 503 with ``Retry-After``, not a 500,
    since the request was fine and a retry may succeed. A command cut off by the outage may
    or may not have been appended; retried with the same ``Idempotency-Key`` it takes effect
    once either way."""
    log.warning("event_store_unavailable", error=f"{type(exc).__name__}: {exc}")
    return _problem(
        503,
        "unavailable",
        "Service unavailable",
        "the event store is unreachable; retry later (with the same Idempotency-Key)",
        headers={"Retry-After": str(RETRY_AFTER_OUTAGE_S)},
    )


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            exception_to_problem_detail_map={
                HTTPException: http_problem,
                DomainError: domain_problem,
                **dict.fromkeys(OUTAGE, outage_problem),
                Exception: internal_problem,
            }
        )
    )


_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed JSON, a missing, unknown or invalid field",
    401: "Missing, invalid or expired token, or wrong credentials",
    403: "The token's role or account may not do this",
    404: "No such resource",
    409: "Conflicts with the current state (duplicate, stock, concurrency)",
    413: "Request body over the limit",
    422: "Refused by a business rule (unknown product, ...)",
    429: "Too many attempts; see Retry-After",
    503: "A store is unreachable; retry after Retry-After",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries documenting the problem+json answers a route can give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS.get(status, "Error"),
            media_type=MEDIA_TYPE,
        )
        for status in statuses
    }
