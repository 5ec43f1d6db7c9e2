"""What every command handler shares: field validation, the bounded optimistic-retry loop,
and the translation of store rejections into domain errors."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from app.commands.errors import (
    ConcurrentModification,
    DomainError,
    DuplicateEmail,
    DuplicateLegacyId,
    DuplicateSku,
    InvalidCommand,
)
from events.errors import UniquenessViolation, VersionConflict
from events.store import Append, AppendResult, EventStore

MAX_ATTEMPTS = 10
"""Attempts per command before a version conflict becomes a 409; each retry re-reads state."""

C = TypeVar("C", bound=msgspec.Struct)
T = TypeVar("T")


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every command: a frozen Struct whose field constraints :func:`validated` enforces."""


def validated(command: C) -> C:
    """Re-check a command's declared constraints (msgspec checks them only when decoding).

    Commands built in code (CLI, ingest, tests) get the same limits as those decoded from HTTP.
    """
    try:
        return msgspec.convert(msgspec.to_builtins(command), type(command))
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        field = path.rstrip("`").lstrip(".") or None
        raise InvalidCommand(message, field=field) from exc


async def retrying(attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run ``attempt`` (read state → decide → append) until no ``VersionConflict``, at most
    ``MAX_ATTEMPTS`` times, with jittered backoff; then :class:`ConcurrentModification`."""
    for n in range(MAX_ATTEMPTS):
        try:
            return await attempt()
        except VersionConflict:
            await asyncio.sleep(random.uniform(0, 0.001 * 2 ** min(n, 6)))
    raise ConcurrentModification(f"{what} kept conflicting with concurrent changes; try again")


async def replayed_or_retrying(
    store: EventStore,
    idempotency_key: str | None,
    attempt: Callable[[], Awaitable[AppendResult]],
    *,
    what: str,
) -> AppendResult:
    """Answer a retried command from its idempotency record, else decide and append.

    The record is consulted before deciding because a decision re-run now could be refused
    (the product since exists, the stock since sold out) although the first one succeeded.
    """
    if idempotency_key is not None and (previous := await store.recorded(idempotency_key)):
        return previous
    return await retrying(attempt, what=what)


_UNIQUE: dict[str, tuple[type[DomainError], str, str]] = {
    "email": (DuplicateEmail, "email", "this email is already registered"),
    "sku": (DuplicateSku, "sku", "another product already has this SKU"),
    "legacy_product": (
        DuplicateLegacyId,
        "legacy_id",
        "this legacy id is mapped to another product",
    ),
}


def uniqueness_error(exc: UniquenessViolation) -> DomainError:
    """The domain error for a reservation another owner holds."""
    cls, field, detail = _UNIQUE.get(exc.kind, (DomainError, exc.kind, f"{exc.kind} is taken"))
    return cls(detail, field=field)


def state_int(state: dict[str, str], field: str, default: int = 0) -> int:
    """An integer field of a decision-state hash (all values are stored as strings)."""
    value = state.get(field)
    return int(value) if value not in (None, "") else default


def version(state: dict[str, str]) -> int:
    return state_int(state, "v")


def result_json(obj: Any) -> str:
    """The string stored with an idempotency record and replayed to a duplicate request."""
    return msgspec.json.encode(obj).decode()


def with_result(result: AppendResult, append: Append) -> AppendResult:
    """The store fills ``result`` only on a replay; fill it on a first append too, so callers
    always read the command's outcome from one place."""
    if result.duplicate:
        return result
    return dataclasses.replace(result, result=append.result)
