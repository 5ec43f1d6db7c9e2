"""What the handlers need from the running application, kept on ``app.state``.

``main.create_app``'s lifespan fills it; controllers read it via :func:`services`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.security.jwt import JWTAuth

from app.auth_sessions import SessionStore
from app.commands.login import LoginLimits
from app.passwords import Passwords
from app.settings import Settings
from events.store import EventStore, Metadata


@dataclass
class Services:
    settings: Settings
    store: EventStore
    passwords: Passwords
    jwt_auth: JWTAuth[Any, Any]
    limits: LoginLimits
    sessions: SessionStore
    """Refresh-token families (plain Redis state, see ``app.auth_sessions``)."""
    views: dict[str, Any] = field(default_factory=dict)
    """Read-side connections (MongoDB, PostgreSQL) added by the query API's lifespan."""


def services(state: State) -> Services:
    return state.services  # type: ignore[no-any-return]


def command_meta(request: Request[Any, Any, Any], actor: str = "anonymous") -> Metadata:
    """Envelope metadata for a command coming over HTTP: the request id correlates its events."""
    rid = request.scope.get("state", {}).get("request_id", "")
    return Metadata(actor=actor, correlation=str(rid), source="api")
