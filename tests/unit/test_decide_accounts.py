"""Sign-up and login decisions with plain data."""

from __future__ import annotations

import pytest

from app.commands.accounts import SignUp, decide_sign_up, normalize_email
from app.commands.errors import AccountAlreadyExists
from app.commands.login import LoginLimits, blocked_for, decide_login
from events.keys import digest
from events.states import AccountState, LoginState
from events.store import Reservation
from events.types import AccountCreated, LoginFailed, LoginSucceeded

LIMITS = LoginLimits(max_failures=5, window_seconds=900)
NOW = 1_800_000_000


def _sealed_sign_up(password_hash: str = "$argon2id$h") -> SignUp:
    return SignUp(
        account_id="a1",
        email="ana@x.com",
        name="Ana",
        password_hash=password_hash,
        sealed_email="pii1:email",
        sealed_name="pii1:name",
        email_digest="d1",
    )


def test_sign_up_reserves_the_email_digest_and_records_only_sealed_data() -> None:
    append = decide_sign_up(_sealed_sign_up(), AccountState())
    [event] = append.events
    assert isinstance(event, AccountCreated) and event.role == "customer"
    assert (event.email, event.name, event.email_digest) == ("pii1:email", "pii1:name", "d1")
    assert append.expect == {"account:a1": 0}
    assert append.reserve == [Reservation("email", "d1", "account:a1")]
    assert append.state["account:a1"].set["password_hash"] == "$argon2id$h"
    assert "ana@x.com" not in repr(append.events) and "Ana" not in repr(append.state)


def test_a_sign_up_that_was_not_sealed_is_never_decided() -> None:
    cmd = SignUp(account_id="a1", email="ana@x.com", name="Ana", password_hash="h")
    with pytest.raises(ValueError, match="sealed"):
        decide_sign_up(cmd, AccountState())


def test_sign_up_over_an_existing_account_is_refused() -> None:
    with pytest.raises(AccountAlreadyExists):
        decide_sign_up(_sealed_sign_up("h"), AccountState(v=1))


def test_emails_are_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Ana@Example.COM ") == "ana@example.com"


def _login(state: LoginState, *, ok: bool, account: str | None = "a1"):  # type: ignore[no-untyped-def]
    return decide_login(
        email_digest=digest("ana@x.com"),
        account_id=account,
        password_ok=ok,
        state=state,
        now=NOW,
        limits=LIMITS,
    )


def test_a_good_login_succeeds_and_clears_failures() -> None:
    decision = _login(LoginState(v=2, failures=(NOW - 10,)), ok=True)
    assert decision.outcome == "ok"
    assert decision.append.events == [
        LoginSucceeded(account_id="a1", email_digest=digest("ana@x.com"))
    ]
    assert decision.append.expect == {f"login:{digest('ana@x.com')}": 2}
    assert decision.append.state[f"login:{digest('ana@x.com')}"].set == {"failures": ""}


def test_an_unknown_email_is_recorded_by_digest_only() -> None:
    decision = _login(LoginState(), ok=False, account=None)
    assert decision.outcome == "unknown_email"
    [event] = decision.append.events
    assert isinstance(event, LoginFailed)
    assert event.email_digest == digest("ana@x.com") and event.account_id is None


def test_the_sixth_attempt_in_the_window_is_blocked_even_with_the_right_password() -> None:
    failures = tuple(NOW - 60 * i for i in range(5))
    decision = _login(LoginState(v=5, failures=failures), ok=True)
    assert decision.outcome == "rate_limited"
    assert decision.retry_after == 900 - 240
    [event] = decision.append.events
    assert isinstance(event, LoginFailed) and event.reason == "rate_limited"


def test_failures_older_than_the_window_do_not_count() -> None:
    old = tuple(NOW - 1000 - i for i in range(5))
    assert blocked_for(LoginState(failures=old), NOW, LIMITS) == 0
    assert _login(LoginState(v=5, failures=old), ok=False).outcome == "wrong_password"
