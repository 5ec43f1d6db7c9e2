"""Access tokens (Litestar's JWT support) and the admin guard.

A token carries ``sub`` (account id), ``role`` and ``exp``. The request's user is built
from the token alone: billing re-checks that the account exists inside the append.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTAuth, Token

from app.settings import Settings

PUBLIC = {"exclude_from_auth": True}
"""``opt`` for routes that need no token (health, sign-up, login, the OpenAPI document)."""


@dataclass
class AccessToken(Token):
    """Litestar's token with ``role`` as a top-level claim."""

    role: str = "customer"


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
