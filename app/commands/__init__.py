"""Commands of the write side: pure decisions plus handlers that load state, decide and append.

One table routes a command to its handler; :func:`execute` is the single entry point used by
the HTTP controllers, the CLI (``create-admin``, ``demo``) and the ingress gateway. Login is
not in the table: it needs the password hasher and answers with credentials, see
:func:`app.commands.login.log_in`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.commands.accounts import SignUp, handle_sign_up
from app.commands.billing import BillOrder, handle_bill_order
from app.commands.catalog import CATALOG_HANDLERS
from events.store import AppendResult, EventStore, Metadata

Handler = Callable[..., Awaitable[AppendResult]]

COMMAND_HANDLERS: dict[type[Any], Handler] = {
    **CATALOG_HANDLERS,
    SignUp: handle_sign_up,
    BillOrder: handle_bill_order,
}


async def execute(
    store: EventStore,
    command: Any,
    meta: Metadata,
    *,
    idempotency_key: str | None = None,
    event_id: str | None = None,
) -> AppendResult:
    """Decide and append one command; raises a ``DomainError`` subclass when it is refused.

    The result's ``result`` is the command's outcome as JSON (``{"account_id"}``,
    ``{"product_id"}``, or the billing receipt), on a first append and on a replay alike.
    """
    handler = COMMAND_HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"no handler for {type(command).__name__}")
    return await handler(store, command, meta, idempotency_key=idempotency_key, event_id=event_id)
