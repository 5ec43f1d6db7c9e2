"""The one command runner: idempotent replay, load state → decide → append, bounded retry on
version conflicts, and the translation of the store's rejections into domain errors.

Every entry point (HTTP controllers, the ingress gateway, the CLI, the demo) calls
:func:`run` through :func:`app.commands.execute`; a command type is described to it by a
:class:`Decider`, listed in the one table ``app.commands.DECIDERS``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.commands.base import MAX_ATTEMPTS, uniqueness_error, validated, with_result
from app.commands.errors import (
    AccountNotFound,
    CategoryInUse,
    ConcurrentModification,
    DomainError,
    InsufficientStock,
    ProductNotFound,
    UnknownCategory,
)
from app.commands.slots import append_across_slots
from events.errors import (
    AggregateMissing,
    AppendRejected,
    GuardFailed,
    UniquenessViolation,
    VersionConflict,
)
from events.states import AggregateState
from events.store import Append, AppendResult, EventStore, Metadata

C = TypeVar("C")
S = TypeVar("S", bound=AggregateState)


def _same_key(command: Any, key: str) -> str:
    return key


def _as_recorded(command: Any, result: AppendResult) -> AppendResult:
    return result


@dataclass(frozen=True, slots=True)
class Decider(Generic[C]):
    """How the runner executes one command type.

    ``reads`` names the aggregates whose typed states the decision needs; ``decide`` is the
    pure decision over them (events and conditions, or a named domain error). The optional
    parts: ``prepare`` validates and completes the command (normalised fields, generated
    ids) once, before any attempt; ``scope`` turns a caller's idempotency key into the
    stored one; ``replayed`` checks a replayed result against the command; ``seal``
    encrypts the command's personal data with its subject's key (:mod:`events.personal`)
    once, after the idempotency check and before the first decision, so that no decision
    ever sees, and no event ever carries, a clear address or name.
    """

    reads: Callable[[C], list[str]]
    decide: Callable[[C, Mapping[str, AggregateState]], Append]
    prepare: Callable[[C], C] = field(default=validated)  # type: ignore[assignment]
    scope: Callable[[C, str], str] = _same_key
    replayed: Callable[[C, AppendResult], AppendResult] = _as_recorded
    seal: Callable[[C, EventStore], Awaitable[C]] | None = None


def state_of(states: Mapping[str, AggregateState], aggregate: str, cls: type[S]) -> S:
    """``states[aggregate]`` as the state type the decider expects."""
    state = states[aggregate]
    if not isinstance(state, cls):
        raise TypeError(f"{aggregate} has a {type(state).__name__}, not a {cls.__name__}")
    return state


async def run(
    decider: Decider[Any],
    store: EventStore,
    command: Any,
    meta: Metadata,
    *,
    idempotency_key: str | None = None,
    event_id: str | None = None,
) -> AppendResult:
    """Execute ``command``; its ``result`` is the command's outcome as JSON, on a first append
    and on an idempotent replay alike. Raises a :class:`DomainError` when refused.

    The idempotency record is consulted before deciding because a decision re-run now could
    be refused (the product since exists, the stock since sold out) although the first one
    succeeded; the append re-checks it atomically anyway.
    """
    command = decider.prepare(command)
    key = decider.scope(command, idempotency_key) if idempotency_key is not None else None
    # On a Redis Cluster the record lives with the command's first aggregate, so that the
    # append that writes it touches one slot (see Keys.idem).
    home = decider.reads(command)[0] if key is not None and store.clustered else None
    if key is not None and (previous := await store.recorded(key, home)) is not None:
        return decider.replayed(command, previous)
    if decider.seal is not None:
        command = await decider.seal(command, store)
    for n in range(MAX_ATTEMPTS):
        states = await store.load(decider.reads(command))
        append = decider.decide(command, states)
        append.meta = meta
        append.idempotency_key = key
        if home is not None and append.idempotency_home is None:
            append.idempotency_home = home
        if event_id is not None:
            append.event_ids = [event_id]
        try:
            if store.clustered:
                result = await append_across_slots(store, append)
            else:
                result = await store.append(append)
        except VersionConflict:
            await asyncio.sleep(random.uniform(0, 0.001 * 2 ** min(n, 6)))
            continue
        except AppendRejected as exc:
            raise rejection(command, exc) from exc
        if result.duplicate:
            return decider.replayed(command, result)
        return with_result(result, append)
    what = type(command).__name__
    raise ConcurrentModification(f"{what} kept conflicting with concurrent changes; try again")


def _deletes(command: Any) -> bool:
    """A category's delete: its append's only category condition is that it stays empty."""
    from app.commands.categories import DeleteCategory

    return isinstance(command, DeleteCategory)


def rejection(command: Any, exc: AppendRejected) -> DomainError:
    """The domain error for a condition that failed inside the atomic append (the decision
    saw it hold, a concurrent append broke it)."""
    match exc:
        case UniquenessViolation():
            return uniqueness_error(exc)
        case GuardFailed() if not hasattr(command, "product_id"):
            product_id = exc.aggregate.removeprefix("product:")
            lines = getattr(command, "lines", ())
            ids = list(dict.fromkeys(line.product_id for line in lines))
            i = ids.index(product_id) if product_id in ids else 0
            return InsufficientStock(
                f"product {product_id} has {exc.actual} in stock, the order needs {exc.required}",
                field=f"lines[{i}].quantity",
                product_id=product_id,
            )
        case GuardFailed():
            # The decider's refusal, met by the guard instead (a sale landed in between).
            return InsufficientStock.for_delta(command.product_id, exc.actual, exc.required)
        case AggregateMissing() if exc.aggregate.startswith("account:"):
            return AccountNotFound(
                f"account {command.account_id} does not exist", field="account_id"
            )
        case AggregateMissing() if exc.aggregate.startswith("category:") and _deletes(command):
            slug = exc.aggregate.removeprefix("category:")
            return CategoryInUse(
                f"category {slug!r} gained a product or a child category meanwhile",
                field="slug",
            )
        case AggregateMissing() if exc.aggregate.startswith("category:"):
            field = "parent" if hasattr(command, "parent") else "category"
            slug = exc.aggregate.removeprefix("category:")
            return UnknownCategory(f"category {slug!r} does not exist", field=field)
        case AggregateMissing() if exc.aggregate.startswith("product:"):
            return ProductNotFound(
                f"product {command.product_id} does not exist", field="product_id"
            )
    raise exc
