"""``Idempotency-Key`` on the routes whose effect is not idempotent by nature: stock
deltas and creations (products, categories, sellers, sign-up).

Billing, checkout, cancellation and refunds check their keys in their deciders
(``replayed``): only the HTTP side runs them under a key. The catalog commands are also
run by the ingest gateway under keys of its own (``ingest:<source>:<id>``, one per event
or legacy step), whose replay must stay a plain duplicate even where a re-planned legacy
step differs from the recorded one, and whose stored names must not change under a
pending entry. So for these routes the HTTP side scopes the caller's key
and checks the replay, and the commands only store the fingerprint in their result JSON.
"""

from __future__ import annotations

from typing import Any

from app.commands import execute
from app.commands.base import checked_replay
from events.store import AppendResult, EventStore, Metadata


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
    keeps it) is refused: the key was reused for another request, and nothing is appended
    (:func:`app.commands.base.checked_replay`).
    """
    stored = f"{scope}:{key}" if key is not None else None
    result = await execute(store, command, meta, idempotency_key=stored)
    return checked_replay(result, fingerprint) if result.duplicate else result
