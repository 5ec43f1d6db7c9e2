"""Refresh-token families: rotation, reuse detection and revocation, as plain Redis state.

A login opens a *family* and hands out its first refresh token
``<family id>.<secret>``. Redis keeps one hash per family,
``{prefix}:session:{family id}``, holding the account, a fingerprint of its password hash,
and the SHA-256 of the family's *current* token only (never a token itself), with a
sliding TTL. ``POST /auth/refresh`` swaps the current hash for the next token's in one
Lua call; presenting any other token of the family (one already rotated away) deletes the
family, so every token of that login is dead from then on. Logout deletes it too.

Why not events: a session is a short-lived secret-bearing cache, not a business fact.
The log keeps facts forever and every view would have to ignore them; the login itself
is already recorded (``LoginSucceeded``), and what ends a session for business reasons
(``AccountDeactivated``, ``PasswordChanged``) is an event that refresh checks against the
account's decision state. Losing Redis loses the sessions, which only means logging in
again.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import Enum

import redis.asyncio as aioredis

from app.commands.accounts import password_fingerprint
from app.commands.errors import DomainError

__all__ = ["InvalidRefreshToken", "Rotated", "Rotation", "SessionStore", "password_fingerprint"]


class InvalidRefreshToken(DomainError):
    """Unknown, expired, logged out, revoked or reused: one answer for all of them."""

    status = 401
    slug = "invalid-refresh-token"
    title = "Invalid refresh token"


ROTATE = """
local key = KEYS[1]
local current = redis.call('HGET', key, 'current')
if not current then
  return {0}
end
if current ~= ARGV[1] then
  redis.call('DEL', key)
  return {-1}
end
redis.call('HSET', key, 'current', ARGV[2])
redis.call('EXPIRE', key, tonumber(ARGV[3]))
return {1, redis.call('HGET', key, 'account_id'), redis.call('HGET', key, 'role'),
        redis.call('HGET', key, 'pw')}
"""
"""KEYS: the family's hash. ARGV: presented token's hash, next token's hash, TTL seconds.
Returns ``{0}`` (no such family), ``{-1}`` (reuse: family deleted) or
``{1, account_id, role, pw}`` (rotated)."""


def token_hash(token: str) -> str:
    """Tokens are 256-bit random, so a fast hash suffices (no guessing to slow down)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Rotation(Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"
    """No such family: never issued, logged out, expired or revoked."""
    REUSED = "reused"
    """A token of the family that was already rotated away: the family is now revoked."""


@dataclass(frozen=True, slots=True)
class Rotated:
    outcome: Rotation
    family: str = ""
    token: str = ""
    """The new refresh token (only when ``ROTATED``)."""
    account_id: str = ""
    role: str = ""
    fingerprint: str = ""


def _family_of(token: str) -> str | None:
    family, dot, secret = token.partition(".")
    if not dot or not family or not secret or len(token) > 200:
        return None
    return family


class SessionStore:
    """The refresh-token families of one deployment (``prefix``)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_seconds: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._rotate = redis.register_script(ROTATE)

    def key(self, family: str) -> str:
        return f"{self.prefix}:session:{family}"

    @staticmethod
    def _new_token(family: str) -> str:
        return f"{family}.{secrets.token_urlsafe(32)}"

    async def open(self, account_id: str, role: str, fingerprint: str) -> str:
        """A new family for a login; returns its first refresh token."""
        family = secrets.token_urlsafe(16)
        token = self._new_token(family)
        key = self.key(family)
        mapping = {
            "account_id": account_id,
            "role": role,
            "pw": fingerprint,
            "current": token_hash(token),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.ttl_seconds)
            await pipe.execute()
        return token

    async def rotate(self, token: str) -> Rotated:
        """Exchange ``token`` for the family's next one, atomically."""
        family = _family_of(token)
        if family is None:
            return Rotated(Rotation.UNKNOWN)
        new = self._new_token(family)
        reply = await self._rotate(
            keys=[self.key(family)], args=[token_hash(token), token_hash(new), self.ttl_seconds]
        )
        code = int(reply[0])
        if code == 0:
            return Rotated(Rotation.UNKNOWN, family)
        if code == -1:
            return Rotated(Rotation.REUSED, family)
        account_id, role, fingerprint = (
            v.decode() if isinstance(v, bytes) else str(v) for v in reply[1:4]
        )
        return Rotated(Rotation.ROTATED, family, new, account_id, role, fingerprint)

    async def revoke(self, token: str) -> None:
        """End the family ``token`` belongs to (any of its tokens, current or rotated)."""
        family = _family_of(token)
        if family is not None:
            await self.redis.delete(self.key(family))

    async def revoke_family(self, family: str) -> None:
        await self.redis.delete(self.key(family))
