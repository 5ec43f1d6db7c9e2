"""Access tokens (Litestar's JWT support) and the admin guard.

A token carries ``sub`` (account id), ``role`` and ``exp``. The request's user is built
from the token alone: billing re-checks that the account exists inside the append.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTAuth, Token
from litestar.security.jwt.token import JWTDecodeOptions

from app.settings import Settings

PUBLIC = {"exclude_from_auth": True}
"""``opt`` for routes that need no token (health, sign-up, login, the OpenAPI document)."""


VERIFIED_CACHE_SIZE = 4096
"""Verified tokens remembered per process (a 32-connection load reuses a handful)."""
_verified: dict[tuple[Any, ...], dict[str, Any]] = {}


@dataclass
class AccessToken(Token):
    """Litestar's token with ``role`` as a top-level claim."""

    role: str = "customer"

    @classmethod
    def decode_payload(
        cls,
        encoded_token: str,
        secret: str,
        algorithms: list[str],
        issuer: str | Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        options: JWTDecodeOptions | None = None,
    ) -> Any:
        """Litestar's verification, remembered: a token string whose signature and claims
        were verified once is not verified again (PyJWT's key preparation and HMAC were a
        seventh of a ``POST /orders``). Time-bound claims are re-checked on every use: past
        its ``exp`` (or before its ``nbf``) a token goes through PyJWT again, which refuses
        it as before. Only successful verifications are kept, so a forged or tampered
        token is always checked (and refused) in full."""
        key = (
            encoded_token,
            secret,
            tuple(algorithms),
            issuer if isinstance(issuer, str | None) else tuple(issuer),
            audience if isinstance(audience, str | None) else tuple(audience),
            tuple(
                (name, tuple(v) if isinstance(v, list) else v)
                for name, v in sorted((options or {}).items())
            ),
        )
        payload = _verified.get(key)
        now = time.time()
        if payload is not None and _current(payload, now, options or {}):
            return dict(payload)
        payload = super().decode_payload(
            encoded_token, secret, algorithms, issuer=issuer, audience=audience, options=options
        )
        if len(_verified) >= VERIFIED_CACHE_SIZE:
            _verified.clear()
        _verified[key] = dict(payload)
        return payload


def _current(payload: dict[str, Any], now: float, options: JWTDecodeOptions) -> bool:
    """The time-bound claims PyJWT checks still hold (no leeway: Litestar passes none)."""
    exp = payload.get("exp")
    if options.get("verify_exp", True) and isinstance(exp, int | float) and now >= exp:
        return False
    nbf = payload.get("nbf")
    return not (options.get("verify_nbf", True) and isinstance(nbf, int | float) and nbf > now)


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    role: str


async def principal_from_token(
    token: AccessToken, _: ASGIConnection[Any, Any, Any, Any]
) -> Principal:
    return Principal(account_id=token.sub, role=token.role)


def build_jwt_auth(settings: Settings) -> JWTAuth[Principal, AccessToken]:
    return JWTAuth[Principal, AccessToken](
        token_secret=settings.jwt_secret(),
        retrieve_user_handler=principal_from_token,
        token_cls=AccessToken,
        default_token_expiration=timedelta(seconds=settings.auth.token_ttl_seconds),
        exclude=["^/schema"],
        description="Bearer access token from POST /auth/login (or the legacy POST /login).",
    )


def issue_token(auth: JWTAuth[Principal, AccessToken], account_id: str, role: str, ttl: int) -> str:
    return auth.create_token(
        identifier=account_id, token_expiration=timedelta(seconds=ttl), role=role
    )


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for catalog routes: the token's role must be ``admin``."""
    user = connection.user
    if not isinstance(user, Principal) or user.role != "admin":
        raise PermissionDeniedException("this route needs the admin role")


def admin_or_seller(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for the catalog and sales routes a seller shares with the admin; the handler
    scopes a seller to its own products."""
    user = connection.user
    if not isinstance(user, Principal) or user.role not in ("admin", "seller"):
        raise PermissionDeniedException("this route needs the admin or seller role")


def acting_seller(user: Principal) -> str | None:
    """The seller a request acts as (``None`` for an admin, who acts for the shop)."""
    return user.account_id if user.role == "seller" else None
