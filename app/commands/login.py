"""Login: check credentials against the write side and record every attempt.

The login aggregate ``login:<keyed digest of the email>`` keeps the recent failure times in its
decision state, so the rate limit holds across API replicas and restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from app.commands.accounts import (
    email_owner,
    email_reservation,
    normalize_email,
    password_fingerprint,
)
from app.commands.base import Command, result_json
from app.commands.errors import InvalidCredentials, RateLimited
from app.commands.profile import AccountInactive
from app.commands.runner import Decider, state_of
from app.passwords import Passwords
from events.states import AccountState, AggregateState, LoginState
from events.store import Append, EventStore, Metadata
from events.types import LoginFailed, LoginSucceeded

Outcome = Literal["ok", "unknown_email", "wrong_password", "rate_limited", "deactivated"]


class LogIn(Command, frozen=True, kw_only=True):
    email: str
    password: str


@dataclass(frozen=True, slots=True)
class LoginLimits:
    max_failures: int = 5
    window_seconds: int = 900


@dataclass(frozen=True, slots=True)
class LoginDecision:
    append: Append
    outcome: Outcome
    retry_after: int = 0


@dataclass(frozen=True, slots=True)
class LoginResult:
    account_id: str
    role: str
    position: str
    fingerprint: str = ""
    """Of the password hash the login matched (``app.auth_sessions.password_fingerprint``)."""


def login_aggregate(email_digest: str) -> str:
    """Named by the email's keyed digest (``Keys.email_digest``), never the address."""
    return f"login:{email_digest}"


def recent_failures(state: LoginState, now: int, window: int) -> list[int]:
    """Failure times (epoch seconds) still inside the window, oldest first."""
    return sorted(t for t in state.failures if t > now - window)


def blocked_for(state: LoginState, now: int, limits: LoginLimits) -> int:
    """Seconds until the next attempt is allowed (0: allowed now)."""
    failures = recent_failures(state, now, limits.window_seconds)
    if len(failures) < limits.max_failures:
        return 0
    oldest_that_counts = failures[-limits.max_failures]
    return max(1, oldest_that_counts + limits.window_seconds - now)


def decide_login(
    *,
    email_digest: str,
    account_id: str | None,
    password_ok: bool,
    state: LoginState,
    now: int,
    limits: LoginLimits,
    active: bool = True,
) -> LoginDecision:
    """Given the login aggregate's state and the checked password, what to record.

    A blocked attempt is refused whatever the password; the right password of a deactivated
    account is refused as ``deactivated``; a success clears the failures (``evolve_login``
    records what each event does to the state).
    """
    aggregate = login_aggregate(email_digest)
    expect = {aggregate: state.v}
    seen = {aggregate: state}
    wait = blocked_for(state, now, limits)
    if wait:
        event = LoginFailed(email_digest=email_digest, reason="rate_limited", account_id=account_id)
        return LoginDecision(Append(events=[event], expect=expect, seen=seen), "rate_limited", wait)
    if account_id is not None and password_ok and not active:
        refused = LoginFailed(
            email_digest=email_digest, reason="deactivated", account_id=account_id
        )
        return LoginDecision(Append(events=[refused], expect=expect, seen=seen), "deactivated")
    if account_id is not None and password_ok:
        success = LoginSucceeded(account_id=account_id, email_digest=email_digest)
        return LoginDecision(Append(events=[success], expect=expect, seen=seen), "ok")
    reason: Outcome = "unknown_email" if account_id is None else "wrong_password"
    failed = LoginFailed(email_digest=email_digest, reason=reason, account_id=account_id)
    return LoginDecision(Append(events=[failed], expect=expect, seen=seen), reason)


class RecordLogin(Command, frozen=True, kw_only=True):
    """Record one login attempt whose password was already checked (hashing is slow and not
    a decision); the decision is whether the attempt is allowed and what it counts as."""

    email_digest: str
    """The keyed digest of the normalised email (``Keys.email_digest``)."""
    account_id: str | None
    password_ok: bool
    now: int
    max_failures: int
    window_seconds: int
    active: bool = True
    """Whether the account was active when its password was checked."""


def _decide_record(command: RecordLogin, states: Mapping[str, AggregateState]) -> Append:
    decision = decide_login(
        email_digest=command.email_digest,
        account_id=command.account_id,
        password_ok=command.password_ok,
        state=state_of(states, login_aggregate(command.email_digest), LoginState),
        now=command.now,
        limits=LoginLimits(command.max_failures, command.window_seconds),
        active=command.active,
    )
    decision.append.result = result_json(
        {"outcome": decision.outcome, "retry_after": decision.retry_after}
    )
    return decision.append


RECORD_LOGIN: Decider[RecordLogin] = Decider(
    reads=lambda c: [login_aggregate(c.email_digest)], decide=_decide_record, prepare=lambda c: c
)
"""Result JSON: ``{"outcome", "retry_after"}``."""


class _Outcome(msgspec.Struct, frozen=True):
    outcome: Outcome
    retry_after: int = 0


async def log_in(
    store: EventStore,
    command: LogIn,
    meta: Metadata,
    *,
    passwords: Passwords,
    limits: LoginLimits,
    clock: Callable[[], float] = time.time,
) -> LoginResult:
    """Raises ``InvalidCredentials`` (401, same for unknown email and wrong password),
    ``AccountInactive`` (403, the right password of a deactivated account) or
    ``RateLimited`` (429); either way the attempt was appended first.

    An account whose email is still reserved under its old, unkeyed name is found there;
    its successful login then moves the reservation forward
    (:func:`app.commands.email_digest.upgrade_email_digest`).
    """
    from app.commands import execute
    from app.commands.email_digest import UpgradeEmailDigest, upgrade_email_digest

    email = normalize_email(command.email)
    email_digest = store.keys.email_digest(email)
    aggregate = login_aggregate(email_digest)
    account_id: str | None = None
    role = "customer"
    fingerprint = ""
    password_ok = False
    active = True
    legacy = False
    login = (await store.load([aggregate]))[aggregate]
    if isinstance(login, LoginState) and not blocked_for(login, int(clock()), limits):
        owner, _ = await email_owner(store, email)
        account = state_of(await store.load([owner]), owner, AccountState) if owner else None
        # The account's state says where its email is reserved: still under the old name,
        # its login moves it, even when the keyed name was already taken for it by an
        # upgrade cut off on a cluster before its append (app.commands.slots).
        legacy = account is not None and email_reservation(account) == ("email", email)
        if account is not None and account.password_hash:
            account_id = (owner or "").removeprefix("account:")
            role = account.role
            active = account.active
            fingerprint = password_fingerprint(account.password_hash)
        hashed = account.password_hash if account is not None else ""
        password_ok = await passwords.verify(hashed or None, command.password)
    record = RecordLogin(
        email_digest=email_digest,
        account_id=account_id,
        password_ok=password_ok,
        now=int(clock()),
        max_failures=limits.max_failures,
        window_seconds=limits.window_seconds,
        active=active,
    )
    result = await execute(store, record, meta)
    decision = msgspec.json.decode(result.result, type=_Outcome)
    if decision.outcome == "rate_limited":
        raise RateLimited(
            "too many failed logins; try again later", retry_after=decision.retry_after
        )
    if decision.outcome == "deactivated":
        raise AccountInactive("this account is deactivated")
    if decision.outcome != "ok" or account_id is None:
        raise InvalidCredentials("email or password is wrong")
    if legacy:
        upgrade = UpgradeEmailDigest(account_id=account_id, email=email)
        await upgrade_email_digest(store, upgrade, meta)
    return LoginResult(
        account_id=account_id, role=role, position=result.position, fingerprint=fingerprint
    )
