"""Login: check credentials against the write side and record every attempt.

The login aggregate ``login:<digest(email)>`` keeps the recent failure times in its
decision state, so the rate limit holds across API replicas and restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from app.commands.accounts import normalize_email
from app.commands.base import Command, retrying, version
from app.commands.errors import InvalidCredentials, RateLimited
from app.passwords import Passwords
from events.keys import digest
from events.store import Append, EventStore, Metadata, StateChange
from events.types import LoginFailed, LoginSucceeded

Outcome = Literal["ok", "unknown_email", "wrong_password", "rate_limited"]


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


def login_aggregate(email: str) -> str:
    return f"login:{digest(email)}"


def recent_failures(state: dict[str, str], now: int, window: int) -> list[int]:
    """Failure times (epoch seconds) still inside the window, oldest first."""
    raw = state.get("failures", "")
    return sorted(t for t in (int(x) for x in raw.split(",") if x) if t > now - window)


def blocked_for(state: dict[str, str], now: int, limits: LoginLimits) -> int:
    """Seconds until the next attempt is allowed (0: allowed now)."""
    failures = recent_failures(state, now, limits.window_seconds)
    if len(failures) < limits.max_failures:
        return 0
    oldest_that_counts = failures[-limits.max_failures]
    return max(1, oldest_that_counts + limits.window_seconds - now)


def decide_login(
    *,
    email: str,
    account_id: str | None,
    password_ok: bool,
    state: dict[str, str],
    now: int,
    limits: LoginLimits,
) -> LoginDecision:
    """Given the login aggregate's state and the checked password, what to record.

    A blocked attempt is refused whatever the password; a success clears the failures.
    """
    email_digest = digest(email)
    aggregate = f"login:{email_digest}"
    expect = {aggregate: version(state)}
    failures = recent_failures(state, now, limits.window_seconds)
    wait = blocked_for(state, now, limits)
    if wait:
        event = LoginFailed(email_digest=email_digest, reason="rate_limited", account_id=account_id)
        return LoginDecision(Append(events=[event], expect=expect), "rate_limited", wait)
    if account_id is not None and password_ok:
        return LoginDecision(
            Append(
                events=[LoginSucceeded(account_id=account_id, email_digest=email_digest)],
                expect=expect,
                state={aggregate: StateChange(set={"failures": ""})},
            ),
            "ok",
        )
    reason: Outcome = "unknown_email" if account_id is None else "wrong_password"
    failures.append(now)
    return LoginDecision(
        Append(
            events=[LoginFailed(email_digest=email_digest, reason=reason, account_id=account_id)],
            expect=expect,
            state={aggregate: StateChange(set={"failures": ",".join(map(str, failures))})},
        ),
        reason,
    )


async def log_in(
    store: EventStore,
    command: LogIn,
    meta: Metadata,
    *,
    passwords: Passwords,
    limits: LoginLimits,
    clock: Callable[[], float] = time.time,
) -> LoginResult:
    """Raises ``InvalidCredentials`` (401, same for unknown email and wrong password) or
    ``RateLimited`` (429); either way the attempt was appended first."""
    email = normalize_email(command.email)
    aggregate = login_aggregate(email)
    state = await store.state(aggregate)
    account_id: str | None = None
    role = "customer"
    password_ok = False
    if not blocked_for(state, int(clock()), limits):
        owner = await store.owner_of("email", email)
        account = await store.state(owner) if owner else {}
        if account.get("password_hash"):
            account_id = (owner or "").removeprefix("account:")
            role = account.get("role", "customer")
        password_ok = await passwords.verify(account.get("password_hash"), command.password)

    async def attempt() -> tuple[LoginDecision, str]:
        decision = decide_login(
            email=email,
            account_id=account_id,
            password_ok=password_ok,
            state=await store.state(aggregate),
            now=int(clock()),
            limits=limits,
        )
        decision.append.meta = meta
        return decision, (await store.append(decision.append)).position

    decision, position = await retrying(attempt, what="login")
    if decision.outcome == "rate_limited":
        raise RateLimited(
            "too many failed logins; try again later", retry_after=decision.retry_after
        )
    if decision.outcome != "ok" or account_id is None:
        raise InvalidCredentials("email or password is wrong")
    return LoginResult(account_id=account_id, role=role, position=position)
