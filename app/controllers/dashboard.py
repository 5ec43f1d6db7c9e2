"""``/dashboard``: the operator's page in the browser, served with every asset from this API.

The page (``app/static/dashboard/``) is static HTML and script with one vendored charting
library (uPlot); it logs in with ``POST /auth/login``, keeps the access token in memory and
reads the existing analytics routes and :func:`dashboard_overview` with it.

A browser's ``EventSource`` cannot send an ``Authorization`` header, so the live feed takes a
*feed ticket* in its query string instead: a JWT that lives :data:`TICKET_TTL_SECONDS`, is
signed with a key derived from the JWT secret (so it is never accepted as an access token,
and an access token is never accepted as a ticket) and carries its own audience. It is
checked when a feed opens: a ticket that leaks through an access log can open the read-only
order feed for the rest of its minute, and nothing else. The page asks for a new one
whenever its feed reconnects, resuming with ``?after=`` at the position it saw last.

Re-driving dead letters runs ``streamshop dlq retry`` as a child process: the projections
and the dead-letter queue live in ``workers/``, which nothing in ``app/`` imports, and the
CLI is the one tested path that re-drives them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import QueryParameter
from litestar.response import Response, ServerSentEvent, ServerSentEventMessage
from litestar.security.jwt import Token
from litestar.static_files import create_static_files_router

from app.auth import PUBLIC, Principal
from app.controllers.feed import After, follow, resume_point, tails
from app.metrics import lag_seconds, snapshot
from app.problems import problem_responses
from app.services import services
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "app" / "static" / "dashboard"
ASSETS = "/dashboard/assets"
DASHBOARD_ROLES = frozenset({"admin", "seller"})
"""Roles that may open the dashboard. Accounts are ``customer`` or ``admin`` today; a
``seller`` role, when accounts get one, is let in here without another change."""
TICKET_TTL_SECONDS = 60
TICKET_AUDIENCE = "streamshop:dashboard-feed"
REDRIVE_TIMEOUT_SECONDS = 300
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""Nothing the page loads may come from another host; the browser enforces it."""

_REDRIVE_LOCK = asyncio.Lock()


def dashboard_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    user = connection.user
    if not isinstance(user, Principal) or user.role not in DASHBOARD_ROLES:
        raise PermissionDeniedException("the dashboard needs the admin or seller role")


def _ticket_key(settings: Settings) -> str:
    return hmac.new(settings.jwt_secret().encode(), b"dashboard-feed", hashlib.sha256).hexdigest()


def issue_ticket(settings: Settings, principal: Principal, ttl: int = TICKET_TTL_SECONDS) -> str:
    token = Token(
        sub=principal.account_id,
        exp=datetime.now(UTC) + timedelta(seconds=ttl),
        aud=TICKET_AUDIENCE,
        extras={"role": principal.role},
    )
    return token.encode(_ticket_key(settings), "HS256")


def check_ticket(settings: Settings, ticket: str) -> Principal:
    """The principal a feed ticket names (401 when it is forged, expired or no ticket)."""
    try:
        token = Token.decode(ticket, _ticket_key(settings), "HS256", audience=TICKET_AUDIENCE)
    except Exception as exc:  # litestar raises NotAuthorizedException, jwt its own errors
        raise NotAuthorizedException("the feed ticket is invalid or expired") from exc
    role = str(token.extras.get("role", ""))
    if role not in DASHBOARD_ROLES:
        raise PermissionDeniedException("the dashboard needs the admin or seller role")
    return Principal(account_id=token.sub, role=role)


dashboard_assets = create_static_files_router(
    path=ASSETS, directories=[STATIC], name="dashboard_assets", opt=PUBLIC, include_in_schema=False
)


@get("/dashboard", opt=PUBLIC, include_in_schema=False, sync_to_thread=False)
def dashboard() -> Response[bytes]:
    """The page: a login form until the browser holds a token, then the panels."""
    return Response(
        (STATIC / "index.html").read_bytes(),
        media_type="text/html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
    )


class ProjectionHealth(msgspec.Struct, frozen=True, kw_only=True):
    projection: str
    lag_events: int
    """Entries not yet delivered, over every partition."""
    lag_seconds: float
    dead_letters: int
    """Entries of its dead-letter stream (parked followers included)."""


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    projections: list[ProjectionHealth]


@get(
    "/dashboard/overview",
    guards=[dashboard_only],
    tags=["ops"],
    operation_id="dashboardOverview",
    responses=problem_responses(401, 403),
)
async def dashboard_overview(state: State) -> Overview:
    """Lag and dead letters per projection, as ``/metrics`` reports them."""
    store = services(state).store
    snap = await snapshot(store.redis, store.keys)
    ages = lag_seconds(snap.lags, snap.now_ms)
    events: dict[str, int] = {}
    for row in snap.lags:
        events[row.projection] = events.get(row.projection, 0) + (row.lag_events or 0)
    return Overview(
        projections=[
            ProjectionHealth(
                projection=name,
                lag_events=events.get(name, 0),
                lag_seconds=round(ages.get(name, 0.0), 3),
                dead_letters=snap.dlq.get(name, 0),
            )
            for name in sorted(set(ages) | set(snap.dlq))
        ]
    )


class FeedTicket(msgspec.Struct, frozen=True, kw_only=True):
    ticket: str
    expires_in: int


@post(
    "/dashboard/feed-ticket",
    guards=[dashboard_only],
    tags=["ops"],
    operation_id="issueFeedTicket",
    status_code=201,
    responses=problem_responses(401, 403),
)
async def feed_ticket(request: Request[Principal, Any, Any], state: State) -> FeedTicket:
    """A ticket for ``GET /dashboard/feed?ticket=``, valid for a minute."""
    ticket = issue_ticket(services(state).settings, request.user)
    return FeedTicket(ticket=ticket, expires_in=TICKET_TTL_SECONDS)


def _is_order(fields: dict[bytes, bytes]) -> bool:
    return fields.get(b"aggregate", b"").startswith(b"order:")


@get(
    "/dashboard/feed",
    opt=PUBLIC,
    security=[{}],
    tags=["ops"],
    operation_id="dashboardFeed",
    responses=problem_responses(400, 401, 403),
)
async def dashboard_feed(
    request: Request[Any, Any, Any],
    state: State,
    ticket: Annotated[str, QueryParameter(max_length=2000)],
    after: After = None,
) -> ServerSentEvent:
    """The order events of the log as they arrive (SSE), for a holder of a feed ticket.

    Ids are positions, as on ``/events/stream``: ``?after=`` resumes with no gap."""
    svc = services(state)
    check_ticket(svc.settings, ticket)
    keys = svc.store.keys
    every = list(range(keys.partitions))
    wanted = resume_point(request, after) or {}
    cursor = await tails(svc.store.redis, keys, [p for p in every if p not in wanted])
    cursor.update({p: e for p, e in wanted.items() if p in every})

    async def feed() -> AsyncIterator[ServerSentEventMessage]:
        async for msg in follow(svc.store.redis, keys, cursor, keep=_is_order):
            yield msg

    return ServerSentEvent(feed())


class Redrive(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    """Every parked sequence was re-driven (``streamshop dlq retry`` exited 0)."""
    redriven: int
    failed: int
    output: list[str]
    """The command's report, one line per entry re-driven or failed."""


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment under which ``streamshop`` sees the stores this API uses."""
    return {
        **os.environ,
        "REDIS_URL": settings.redis.url,
        "STREAM_PREFIX": settings.redis.prefix,
        "STREAM_PARTITIONS": str(settings.redis.partitions),
        "MONGO_URL": settings.mongo.url,
        "MONGO_DB": settings.mongo.database,
        "DATABASE_URL": settings.postgres.url,
        "LOG_FORMAT": "json",
    }


@post(
    "/dashboard/dead-letters/redrive",
    guards=[dashboard_only],
    tags=["ops"],
    operation_id="redriveDeadLetters",
    status_code=200,
    responses=problem_responses(401, 403),
)
async def redrive_dead_letters(request: Request[Principal, Any, Any], state: State) -> Redrive:
    """Re-drive every parked sequence of every projection, in order (admin only).

    One re-drive at a time per API process; a second click waits for the first."""
    if request.user.role != "admin":
        raise PermissionDeniedException("re-driving dead letters needs the admin role")
    settings = services(state).settings
    async with _REDRIVE_LOCK:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.cli",
            "dlq",
            "retry",
            "--no-progress",
            env=cli_env(settings),
            cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(REDRIVE_TIMEOUT_SECONDS):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    return Redrive(
        ok=proc.returncode == 0,
        redriven=sum(line.startswith("redriven") for line in lines),
        failed=sum(line.startswith("failed") for line in lines),
        output=lines,
    )


DASHBOARD_ROUTES: list[Any] = [
    dashboard,
    dashboard_assets,
    dashboard_overview,
    feed_ticket,
    dashboard_feed,
    redrive_dead_letters,
]
