"""Access tokens (Litestar's JWT support) and the admin guard.

A token carries ``sub`` (account id), ``role`` and ``exp``. The request's user is built
from the token alone: billing re-checks that the account exists inside the append.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Self

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTAuth, Token

from app.settings import Settings

PUBLIC = {"exclude_from_auth": True}
"""``opt`` for routes that need no token (health, sign-up, login, the OpenAPI document)."""


VERIFIED_CACHE_SIZE = 4096
"""Verified tokens remembered per process (a 32-connection load reuses a handful)."""
_verified: dict[tuple[Any, ...], Token] = {}


def _hashable(value: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    return value if isinstance(value, str | None) else tuple(value)


@dataclass
class AccessToken(Token):
    """Litestar's token with ``role`` as a top-level claim."""

    role: str = "customer"

    @classmethod
    def decode(
        cls,
        encoded_token: str,
        secret: str,
        algorithm: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        require_claims: Sequence[str] | None = None,
        verify_exp: bool = True,
        verify_nbf: bool = True,
        strict_audience: bool = False,
    ) -> Self:
        """Litestar's verification, remembered: a token string whose signature and claims
        were verified once (with the same secret and checks) is not verified nor converted
        again; PyJWT's key preparation and HMAC, then Litestar's conversion of the claims,
        were a seventh of a ``POST /orders``. Time-bound claims are re-checked on every
        use: past its ``exp`` (or before its ``nbf``) a token goes through Litestar and
        PyJWT again, which refuse it as before. Only successful verifications are kept, so
        a forged or tampered token is always checked (and refused) in full. The token is
        shared by the requests that present it; nothing changes a request's token."""
        key = (
            encoded_token,
            secret,
            algorithm,
            _hashable(audience),
            _hashable(issuer),
            tuple(require_claims or ()),
            verify_exp,
            verify_nbf,
            strict_audience,
        )
        token = _verified.get(key)
        if token is not None and _current(token, time.time(), verify_exp, verify_nbf):
            return token  # type: ignore[return-value]
        token = super().decode(
            encoded_token,
            secret,
            algorithm,
            audience=audience,
            issuer=issuer,
            require_claims=require_claims,
            verify_exp=verify_exp,
            verify_nbf=verify_nbf,
            strict_audience=strict_audience,
        )
        if len(_verified) >= VERIFIED_CACHE_SIZE:
            _verified.clear()
        _verified[key] = token
        return token


def _current(token: Token, now: float, verify_exp: bool, verify_nbf: bool) -> bool:
    """The time-bound claims PyJWT checks still hold (no leeway: Litestar passes none)."""
    if verify_exp and now >= token.exp.timestamp():
        return False
    nbf = token.extras.get("nbf")
    return not (verify_nbf and isinstance(nbf, int | float) and nbf > now)


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
