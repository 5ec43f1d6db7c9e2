"""Sign-up: open an account whose email no other account holds."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

import msgspec

from app.commands.base import Command, request_fingerprint, result_json, validated
from app.commands.errors import AccountAlreadyExists, DuplicateEmail, InvalidCommand
from app.commands.runner import Decider, state_of
from events.ids import uuid7
from events.personal import is_sealed
from events.states import AccountState
from events.store import Append, EventStore, Reservation
from events.types import AccountCreated

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=254,
        pattern=EMAIL_PATTERN,
        description="Normalised (trimmed, lower-case) email address.",
    ),
]
AccountName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


def normalize_email(raw: str) -> str:
    """The one spelling of an email that uniqueness and login compare on."""
    return raw.strip().lower()


def account_aggregate(account_id: str) -> str:
    return f"account:{account_id}"


def email_reservation(state: AccountState) -> tuple[str, str] | None:
    """Where the account's email is reserved, as ``(kind, value)`` for :class:`Reservation`.

    Under its keyed digest, except for an account signed up before sealing (its email still
    clear in the state) that has not logged in since: the code of that time reserved the
    address itself, so the key's name holds only the address's unkeyed hash
    (:func:`events.keys.digest`). The first login moves it forward (``EmailDigestUpgraded``).
    ``None`` once forgotten.
    """
    if not state.exists or state.forgotten:
        return None
    if state.email and not is_sealed(state.email):
        return ("email", state.email)
    return ("email", state.email_digest) if state.email_digest else None


async def email_owner(store: EventStore, email: str) -> tuple[str | None, bool]:
    """The ``account:<id>`` holding a normalised email, and whether it holds it under the
    old, unkeyed name (an account from before keyed digests; see :func:`email_reservation`).

    The keyed name is asked first. The old names are never created any more and leave only
    in an append that takes the keyed name in the same step (the upgrade) or frees the
    email (forgetting), so a caller that finds neither may rely on the keyed reservation of
    its own append to settle a race.
    """
    owner = await store.owner_of("email", store.personal.email_digest(email))
    if owner is not None:
        return owner, False
    legacy = await store.owner_of("email", email)
    return legacy, legacy is not None


def password_fingerprint(password_hash: str) -> str:
    """What a session (``app.auth_sessions``) remembers of the password it was opened with:
    a password change ends every session opened before it, without listing them."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


class SignUp(Command, frozen=True, kw_only=True):
    """Open an account. The password arrives already hashed: hashing is slow and not a decision."""

    account_id: str | None = None
    email: Email
    name: AccountName
    password_hash: Annotated[str, msgspec.Meta(min_length=1)]
    role: Literal["customer", "admin", "seller"] = "customer"
    sealed_email: str = ""
    """Set by :func:`seal_sign_up`: the email sealed with the new account's key."""
    sealed_name: str = ""
    email_digest: str = ""
    """Set by :func:`seal_sign_up`: the keyed digest the email is reserved under."""


def sign_up_request(email_digest: str, role: str) -> str:
    """The fingerprint of a sign-up (:func:`~app.commands.base.request_fingerprint`): its
    email's keyed digest and its role. It is kept with the idempotency record, so it holds
    no clear or unkeyed personal data: the name is left out, and the password too, which
    arrives hashed with a new salt on every attempt."""
    return request_fingerprint(email_digest, role)


def decide_sign_up(cmd: SignUp, state: AccountState) -> Append:
    """The account must be new and its email free; the reservation makes that atomic.

    The event carries only the sealed email and name (:func:`seal_sign_up` ran first), and
    the reservation is keyed by the email's keyed digest, never by the address.
    """
    if cmd.account_id is None:
        raise ValueError("account_id must be assigned before deciding")
    if not (is_sealed(cmd.sealed_email) and is_sealed(cmd.sealed_name) and cmd.email_digest):
        raise ValueError("personal data must be sealed before deciding")
    if state.exists:
        raise AccountAlreadyExists(f"account {cmd.account_id} already exists", field="account_id")
    aggregate = account_aggregate(cmd.account_id)
    return Append(
        events=[
            AccountCreated(
                account_id=cmd.account_id,
                email=cmd.sealed_email,
                name=cmd.sealed_name,
                password_hash=cmd.password_hash,
                role=cmd.role,
                email_digest=cmd.email_digest,
            )
        ],
        expect={aggregate: 0},
        reserve=[Reservation("email", cmd.email_digest, aggregate)],
        seen={aggregate: state},
        result=result_json(
            {"account_id": cmd.account_id, "request": sign_up_request(cmd.email_digest, cmd.role)}
        ),
    )


def prepare_sign_up(command: SignUp) -> SignUp:
    """One spelling of the email, the declared limits, and an account id."""
    email = normalize_email(command.email)
    if len(email) > 254 or not re.match(EMAIL_PATTERN, email):
        raise InvalidCommand("not a valid email address", field="email")
    return validated(
        msgspec.structs.replace(command, email=email, account_id=command.account_id or uuid7())
    )


async def seal_sign_up(command: SignUp, store: EventStore) -> SignUp:
    """Seal the email and name with the new account's key (created here). A taken email,
    under its keyed name or its old one (:func:`email_owner`), is refused before a key is
    made for it; a race past this check leaves an unused key."""
    personal = store.personal
    email_digest = personal.email_digest(command.email)
    owner, _ = await email_owner(store, command.email)
    if owner is not None and owner != account_aggregate(command.account_id or ""):
        raise DuplicateEmail("this email is already registered", field="email")
    seal = await personal.sealer(command.account_id or "")
    return msgspec.structs.replace(
        command,
        sealed_email=seal("email", command.email),
        sealed_name=seal("name", command.name),
        email_digest=email_digest,
    )


SIGN_UP: Decider[SignUp] = Decider(
    reads=lambda c: [account_aggregate(c.account_id or "")],
    decide=lambda c, s: decide_sign_up(
        c, state_of(s, account_aggregate(c.account_id or ""), AccountState)
    ),
    prepare=prepare_sign_up,
    seal=seal_sign_up,
)
"""Result JSON: ``{"account_id", "request"}`` (``request``: :func:`sign_up_request`). A taken
email raises ``DuplicateEmail``."""
