"""Personal data in events: sealed with a per-customer key, so destroying the key forgets it.

A personal field of an event (an account's email, name, shipping address) is stored as a
*sealed* string, ``pii1:<base64url(nonce ‖ AES-256-GCM ciphertext)>``, under the key of
its subject (the account id). The subject and the field name are the cipher's associated
data, so a sealed value copied into another account's event or another field does not
open. The log, the decision state, the audit, the dead letters and the lake therefore only
ever hold ciphertext; the read models open it while the key exists.

The keys live behind :class:`KeyStore` (a Redis hash in dev and tests, a KMS in
production). Forgetting a customer destroys its key: every sealed value of that customer,
in every copy of the log, becomes noise, and :meth:`Opener.open` answers ``None``.

A value that does not start with the sealed prefix is clear text written before sealing
existed (or by a test); it is returned as it is, which is what "upcast on read" means for
those fields.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX = "pii1:"
NONCE_BYTES = 12
KEY_BYTES = 32

DEV_DIGEST_SECRET = b"streamshop-dev-email-digest-secret"
"""The HMAC secret of dev mode and tests; production sets ``EMAIL_DIGEST_SECRET``."""


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


def _aad(subject: str, field: str) -> bytes:
    return f"{subject}\x00{field}".encode()


def seal(key: bytes, subject: str, field: str, clear: str) -> str:
    """``clear`` encrypted under ``subject``'s key, bound to the subject and the field."""
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, clear.encode(), _aad(subject, field))
    return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + ciphertext).decode().rstrip("=")


class SealBroken(ValueError):
    """A sealed value that does not open with its subject's key (tampered or misplaced)."""


def unseal(key: bytes | None, subject: str, field: str, value: str) -> str | None:
    """The clear text of ``value``; ``None`` when the key is gone (the customer was
    forgotten). Clear legacy text is returned as it is."""
    if not is_sealed(value):
        return value
    if key is None:
        return None
    body = value[len(SEALED_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        clear = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(subject, field))
    except (InvalidTag, ValueError) as exc:  # binascii.Error is a ValueError
        raise SealBroken(f"sealed {field} of {subject} does not open with its key") from exc
    return clear.decode()


def email_digest(secret: bytes, email: str) -> str:
    """The keyed pseudonym of a normalised email: what uniqueness and login look up.

    HMAC-SHA256 with a server secret, so a list of candidate addresses cannot be hashed and
    matched against Redis keys or login events without the secret. An empty secret is
    refused: it would be an unkeyed hash under another name.
    """
    if not secret:
        raise ValueError("no email-digest secret: set EMAIL_DIGEST_SECRET")
    return hmac.new(secret, email.encode(), hashlib.sha256).hexdigest()[:32]


class KeyStore(Protocol):
    """Where per-subject data keys live (a Redis hash here; a KMS's port in production).

    ``create`` is create-or-get, so a retried command seals with the same key; ``destroy``
    is the forgetting, and must be durable before it returns.
    """

    async def create(self, subject: str) -> bytes: ...

    async def get_many(self, subjects: Iterable[str]) -> dict[str, bytes | None]: ...

    async def destroy(self, subject: str) -> bool: ...


class RedisKeyStore:
    """Keys in one hash, ``{prefix}:pii:keys`` (subject → 32 raw bytes). Dev and tests only:
    the AOF keeps a destroyed key until the next rewrite, which a KMS would not."""

    def __init__(self, redis: object, prefix: str) -> None:
        self.redis = redis
        self.key = f"{prefix}:pii:keys"  # Keys.personal_keys()

    async def create(self, subject: str) -> bytes:
        fresh = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        await self.redis.hsetnx(self.key, subject, fresh)  # type: ignore[attr-defined]
        stored = await self.redis.hget(self.key, subject)  # type: ignore[attr-defined]
        return _raw(stored) if stored is not None else fresh

    async def get_many(self, subjects: Iterable[str]) -> dict[str, bytes | None]:
        wanted = sorted(set(subjects))
        if not wanted:
            return {}
        values = await self.redis.hmget(self.key, wanted)  # type: ignore[attr-defined]
        return {s: None if v is None else _raw(v) for s, v in zip(wanted, values, strict=True)}

    async def destroy(self, subject: str) -> bool:
        return bool(await self.redis.hdel(self.key, subject))  # type: ignore[attr-defined]


def _raw(value: bytes | str) -> bytes:
    """A key as the client returned it (a client with ``decode_responses`` gives text)."""
    return value if isinstance(value, bytes) else value.encode("latin-1")


class Opener:
    """The keys of one batch's subjects, fetched once: opens their sealed fields.

    A subject whose key was looked up and is gone opens as ``None`` (forgotten); a subject
    that was not looked up at all is a bug, and raises rather than pass for forgotten.
    """

    def __init__(self, keys: Mapping[str, bytes | None]) -> None:
        self.keys = keys

    def open(self, subject: str, field: str, value: str) -> str | None:
        if not is_sealed(value):
            return value
        if subject not in self.keys:
            raise LookupError(f"the key of {subject} was not fetched (no key store?)")
        return unseal(self.keys[subject], subject, field, value)


CLEAR = Opener({})
"""Opens only clear text (legacy events, tests); a sealed value raises ``LookupError``."""


class PersonalData:
    """Sealing, opening and forgetting, over one key store and the email-digest secret."""

    def __init__(self, keys: KeyStore, digest_secret: bytes = DEV_DIGEST_SECRET) -> None:
        self.keys = keys
        self.digest_secret = digest_secret

    def email_digest(self, email: str) -> str:
        return email_digest(self.digest_secret, email)

    async def sealer(self, subject: str) -> Sealer:
        return Sealer(subject, await self.keys.create(subject))

    async def opener(self, subjects: Iterable[str]) -> Opener:
        return Opener(await self.keys.get_many(subjects))

    async def forget(self, subject: str) -> bool:
        return await self.keys.destroy(subject)


class Sealer:
    """Seals the fields of one subject with its key."""

    def __init__(self, subject: str, key: bytes) -> None:
        self.subject = subject
        self.key = key

    def __call__(self, field: str, clear: str) -> str:
        return seal(self.key, self.subject, field, clear)
