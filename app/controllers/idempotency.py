"""``Idempotency-Key`` on the routes whose effect is not idempotent by nature: stock
deltas and creations (products, categories, sellers, sign-up).

Billing and checkout scope and check their keys in their deciders. The catalog commands
are also run by the ingest gateway under keys of its own (``ingest:<source>:<id>``, one
per event or legacy step), whose replay must stay a plain duplicate even where a
re-planned legacy step differs from the recorded one, and whose stored names must not
change under a pending entry. So for these routes the HTTP side scopes the caller's key
and checks the replay, and the commands only store the fingerprint in their result JSON.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app.commands import execute
from app.commands.errors import IdempotencyKeyReused
from events.store import AppendResult, EventStore, Metadata


class _Recorded(msgspec.Struct):
    """What the check reads of a command's result JSON."""

    request: str = ""


_recorded = msgspec.json.Decoder(_Recorded)


async def execute_once(
    store: EventStore,
    command: Any,
    meta: Metadata,
    *,
    key: str | None,
    scope: str,
    fingerprint: str,
) -> AppendResult:
    """:func:`app.commands.execute` with the caller's ``key`` stored as ``{scope}:{key}``.

    ``scope`` names the route and the actor (and the aggregate, where the route names one),
    so that one key never replays another route's or another actor's command. A replay
    whose stored fingerprint is not ``fingerprint`` (the command's, as its result JSON
    keeps it) is refused: the key was reused for another request, and nothing is appended.
    """
    stored = f"{scope}:{key}" if key is not None else None
    result = await execute(store, command, meta, idempotency_key=stored)
    if result.duplicate and _recorded.decode(result.result).request != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request", field="Idempotency-Key"
        )
    return result
