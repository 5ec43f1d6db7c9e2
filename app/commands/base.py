"""What every command shares: the base type, field validation, and the result helpers the
runner (:mod:`app.commands.runner`) uses."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec

from app.commands.errors import (
    DomainError,
    DuplicateEmail,
    DuplicateLegacyId,
    DuplicateSku,
    IdempotencyKeyReused,
    InvalidCommand,
)
from events.errors import UniquenessViolation
from events.store import Append, AppendResult

MAX_ATTEMPTS = 10
"""Attempts per command before a version conflict becomes a 409; each retry re-reads state."""

C = TypeVar("C", bound=msgspec.Struct)
K = TypeVar("K")

Position = Annotated[
    str,
    msgspec.Meta(description="Read-your-writes token: pass it to a query to wait for this write."),
]
"""An append's position (:attr:`events.store.AppendResult.position`) in a command's answer."""


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


def result_json(obj: Any) -> str:
    """The string stored with an idempotency record and replayed to a duplicate request."""
    return msgspec.json.encode(obj).decode()


def request_fingerprint(*fields: Any) -> str:
    """Identifies the request behind an idempotency key. A command's result JSON stores it
    as ``request``, so that a key reused for another request can be refused on its replay
    (:func:`checked_replay`)."""
    return hashlib.sha256(msgspec.json.encode(fields)).hexdigest()[:32]


class _Recorded(msgspec.Struct):
    """What :func:`checked_replay` reads of a command's result JSON."""

    request: str | None = None


_recorded = msgspec.json.Decoder(_Recorded)


def checked_replay(replay: AppendResult, fingerprint: str) -> AppendResult:
    """``replay`` (a command answered from its idempotency record) if the record was stored
    for the request whose fingerprint is ``fingerprint``; else the key was reused for
    another request, and :class:`IdempotencyKeyReused` refuses it before anything is
    appended.

    The one comparison of every keyed route, in a decider's ``replayed`` (billing,
    checkout, cancel, refund) or in :func:`app.controllers.idempotency.execute_once`. A
    record without a fingerprint, stored before its route kept one, replays as it is: a
    retry pending across the deploy still gets its first answer."""
    recorded = _recorded.decode(replay.result).request
    if recorded is not None and recorded != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request", field="Idempotency-Key"
        )
    return replay


def compared_by(request: Callable[[K], str]) -> Callable[[K, AppendResult], AppendResult]:
    """A decider's ``replayed``: :func:`checked_replay` against ``request(command)``, the
    fingerprint that the command's decision stores in its result JSON."""

    def replayed(command: K, replay: AppendResult) -> AppendResult:
        return checked_replay(replay, request(command))

    return replayed


def with_result(result: AppendResult, append: Append) -> AppendResult:
    """The store fills ``result`` only on a replay; fill it on a first append too, so callers
    always read the command's outcome from one place."""
    if result.duplicate:
        return result
    return dataclasses.replace(result, result=append.result)
