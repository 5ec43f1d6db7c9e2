"""Per-client rate limits on the credential routes (login, legacy login, refresh).

The per-email limit (``app.commands.login``) stops guessing one account's password; this
one stops a single client from spraying many emails, each attempt costing an argon2 hash.
It is Litestar's ``RateLimitMiddleware`` on a ``RedisStore`` (so the budget is shared by
every API replica), keyed by the remote address, applied per route. Litestar answers
429 with ``RateLimit-*`` headers; :class:`AuthRateLimitMiddleware` adds ``Retry-After``.

Behind a proxy the remote address is the proxy's: run uvicorn with ``--proxy-headers`` and
``--forwarded-allow-ips`` so it is the client's.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar, Request
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware, get_remote_address
from litestar.stores.redis import RedisStore
from litestar.types import Receive, Scope, Send

from app.settings import Settings

STORE = "auth_rate_limit"
"""The name of the Litestar store the limits count in."""


class AuthRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's middleware, plus ``Retry-After`` on the 429 (its ``RateLimit-Reset``), and
    the limit read from the app's settings (route middleware is declared at import, before
    any settings exist)."""

    def __init__(self, app: Any, config: RateLimitConfig, budget: str) -> None:
        super().__init__(app, config)
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings: Settings = scope["litestar_app"].state.settings
        self.max_requests = per_minute(settings, self.budget)
        if self.max_requests <= 0:
            await self.app(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException as exc:
            headers = dict(exc.headers or {})
            reset = headers.get(self.config.rate_limit_reset_header_key, "1")
            headers["Retry-After"] = str(max(1, int(reset)))
            exc.headers = headers
            raise


def _identified(budget: str) -> Any:
    def identifier(request: Request[Any, Any, Any]) -> str:
        return f"{budget}:{get_remote_address(request)}"

    return identifier


def per_minute(settings: Settings, budget: str) -> int:
    """The requests per client per minute a budget allows (``0``: no limit)."""
    auth = settings.auth
    return auth.refresh_rate_per_minute if budget == "refresh" else auth.login_rate_per_minute


def auth_rate_limit(budget: str) -> DefineMiddleware:
    """Route middleware counting requests per client per minute in ``budget`` (``login`` or
    ``refresh``); routes sharing a budget share the count."""
    config = RateLimitConfig(
        rate_limit=("minute", 1),  # replaced per request by the settings' limit
        identifier_for_request=_identified(budget),
        middleware_class=AuthRateLimitMiddleware,
        store=STORE,
    )
    return DefineMiddleware(AuthRateLimitMiddleware, config=config, budget=budget)


def register_rate_limit_store(app: Litestar, redis: aioredis.Redis, settings: Settings) -> None:
    """Count in the app's Redis, under the deployment's prefix (called from the lifespan,
    which owns and closes the client)."""
    store = RedisStore(redis, namespace=f"{settings.redis.prefix}:ratelimit")
    app.stores.register(STORE, store, allow_override=True)
