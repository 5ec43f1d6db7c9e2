"""Read-your-writes: wait (bounded) until a view has applied a command's position.

A command answers with ``position`` (see :mod:`events.positions`); a query given it as
``min_position`` polls the view's checkpoints until every named partition is reached, at
most :data:`MAX_WAIT_SECONDS`, then answers with ``X-View-Position`` (what the view had
applied) and ``X-View-Stale: true`` if it gave up waiting.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from litestar import Response
from litestar.params import QueryParameter

from app.queries.cursors import bad_param
from app.queries.read_side import store_errors
from events.positions import InvalidPosition, format_position, parse_position, reached

MAX_WAIT_SECONDS = 5.0
POLL_SECONDS = (0.01, 0.02, 0.05, 0.1)
"""Polling steps: fast at first (the projector usually lags by milliseconds), then 100 ms."""

MinPosition = Annotated[
    str | None,
    QueryParameter(
        name="min_position",
        required=False,
        max_length=2000,
        description="A command's `position`: wait (at most 5 s) until this view has applied it.",
    ),
]


class CheckpointedView(Protocol):
    async def checkpoints(self) -> dict[int, str | None]: ...


@dataclass(frozen=True, slots=True)
class ViewState:
    position: str
    stale: bool

    def headers(self) -> dict[str, str]:
        headers = {"X-View-Position": self.position}
        if self.stale:
            headers["X-View-Stale"] = "true"
        return headers


async def wait_for(
    view: CheckpointedView, min_position: str | None, max_wait: float = MAX_WAIT_SECONDS
) -> ViewState:
    """Wait until ``view`` has applied ``min_position`` (or the timeout ran out)."""
    wanted: dict[int, str] = {}
    if min_position:
        try:
            wanted = parse_position(min_position)
        except InvalidPosition as exc:
            raise bad_param("min_position", str(exc)) from exc
    deadline = time.monotonic() + max_wait
    step = 0
    with store_errors():
        while True:
            checkpoints = await view.checkpoints()
            if reached(checkpoints, wanted):
                return ViewState(_position(checkpoints), stale=False)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ViewState(_position(checkpoints), stale=True)
            await asyncio.sleep(min(POLL_SECONDS[min(step, len(POLL_SECONDS) - 1)], remaining))
            step += 1


def _position(checkpoints: dict[int, str | None]) -> str:
    return format_position({p: e for p, e in checkpoints.items() if e and e != "0-0"})


def view_response(content: Any, view: ViewState) -> Response[Any]:
    return Response(content, headers=view.headers())
