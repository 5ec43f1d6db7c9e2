"""Sign-up: open an account whose email no other account holds."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

import msgspec

from app.commands.base import Command, result_json, validated
from app.commands.errors import AccountAlreadyExists, InvalidCommand
from app.commands.runner import Decider, state_of
from events.ids import uuid7
from events.states import AccountState
from events.store import Append, Reservation
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


def decide_sign_up(cmd: SignUp, state: AccountState) -> Append:
    """The account must be new and its email free; the reservation makes that atomic."""
    if cmd.account_id is None:
        raise ValueError("account_id must be assigned before deciding")
    if state.exists:
        raise AccountAlreadyExists(f"account {cmd.account_id} already exists", field="account_id")
    aggregate = account_aggregate(cmd.account_id)
    return Append(
        events=[
            AccountCreated(
                account_id=cmd.account_id,
                email=cmd.email,
                name=cmd.name,
                password_hash=cmd.password_hash,
                role=cmd.role,
            )
        ],
        expect={aggregate: 0},
        reserve=[Reservation("email", cmd.email, aggregate)],
        seen={aggregate: state},
        result=result_json({"account_id": cmd.account_id}),
    )


def prepare_sign_up(command: SignUp) -> SignUp:
    """One spelling of the email, the declared limits, and an account id."""
    email = normalize_email(command.email)
    if len(email) > 254 or not re.match(EMAIL_PATTERN, email):
        raise InvalidCommand("not a valid email address", field="email")
    return validated(
        msgspec.structs.replace(command, email=email, account_id=command.account_id or uuid7())
    )


SIGN_UP: Decider[SignUp] = Decider(
    reads=lambda c: [account_aggregate(c.account_id or "")],
    decide=lambda c, s: decide_sign_up(
        c, state_of(s, account_aggregate(c.account_id or ""), AccountState)
    ),
    prepare=prepare_sign_up,
)
"""Result JSON: ``{"account_id": ...}``. A taken email raises ``DuplicateEmail``."""
