"""Profile, password and (de)activation decisions with plain data: given events, when
command, then events or a named error."""

from __future__ import annotations

import pytest

from app.commands.errors import EmptyUpdate
from app.commands.login import LoginLimits, decide_login
from app.commands.profile import (
    AccountInactive,
    ActivationUnchanged,
    ChangePassword,
    ChangeProfile,
    DeactivateAccount,
    NoSuchAccount,
    ReactivateAccount,
    WrongPassword,
    decide_change_password,
    decide_change_profile,
    decide_deactivate,
    decide_reactivate,
)
from events.states import AccountState, LoginState, fold
from events.types import (
    AccountCreated,
    AccountDeactivated,
    AccountProfileChanged,
    AccountReactivated,
    LoginFailed,
    PasswordChanged,
    ShippingAddress,
)

CREATED = AccountCreated(account_id="a1", email="ana@x.com", name="Ana", password_hash="h1")
ADDRESS = ShippingAddress(line1="Rua A, 1", city="Recife", postal_code="50000-000")


def given(*events: object) -> AccountState:
    state: AccountState = fold("account:a1", [CREATED, *events])
    return state


def test_a_profile_change_records_the_new_fields_and_the_state_takes_the_name() -> None:
    command = ChangeProfile(
        account_id="a1",
        name="Ana Maria",
        shipping_address=ADDRESS,
        sealed_name="pii1:name",
        sealed_address="pii1:address",
    )
    append = decide_change_profile(command, given())
    [event] = append.events
    assert event == AccountProfileChanged(
        account_id="a1", name="pii1:name", shipping_address="pii1:address"
    )
    assert append.expect == {"account:a1": 1}
    assert append.state["account:a1"].set == {"name": "pii1:name"}


def test_an_empty_profile_change_is_refused() -> None:
    with pytest.raises(EmptyUpdate):
        decide_change_profile(ChangeProfile(account_id="a1"), given())


def test_a_missing_account_is_refused() -> None:
    with pytest.raises(NoSuchAccount):
        decide_change_profile(ChangeProfile(account_id="a1", name="X"), AccountState())


def test_a_password_change_replaces_the_hash_it_was_checked_against() -> None:
    cmd = ChangePassword(account_id="a1", checked_hash="h1", password_hash="h2")
    append = decide_change_password(cmd, given())
    assert append.events == [PasswordChanged(account_id="a1", password_hash="h2")]
    assert append.state["account:a1"].set == {"password_hash": "h2"}


def test_a_password_change_checked_against_a_replaced_hash_is_refused() -> None:
    cmd = ChangePassword(account_id="a1", checked_hash="h1", password_hash="h3")
    with pytest.raises(WrongPassword):
        decide_change_password(cmd, given(PasswordChanged(account_id="a1", password_hash="h2")))


def test_deactivation_and_reactivation_flip_the_active_flag_once() -> None:
    deactivated = given(AccountDeactivated(account_id="a1"))
    assert not deactivated.active
    with pytest.raises(ActivationUnchanged):
        decide_deactivate(DeactivateAccount(account_id="a1"), deactivated)
    append = decide_reactivate(ReactivateAccount(account_id="a1"), deactivated)
    assert append.events == [AccountReactivated(account_id="a1")]
    assert given(AccountDeactivated(account_id="a1"), AccountReactivated(account_id="a1")).active
    with pytest.raises(ActivationUnchanged):
        decide_reactivate(ReactivateAccount(account_id="a1"), given())


def test_a_deactivated_account_cannot_change_its_profile_or_password() -> None:
    deactivated = given(AccountDeactivated(account_id="a1"))
    with pytest.raises(AccountInactive):
        decide_change_profile(ChangeProfile(account_id="a1", name="X"), deactivated)
    with pytest.raises(AccountInactive):
        decide_change_password(
            ChangePassword(account_id="a1", checked_hash="h1", password_hash="h2"), deactivated
        )


def test_the_right_password_of_a_deactivated_account_is_refused_and_not_counted() -> None:
    decision = decide_login(
        email_digest="d1",
        account_id="a1",
        password_ok=True,
        state=LoginState(v=1),
        now=1_800_000_000,
        limits=LoginLimits(),
        active=False,
    )
    [event] = decision.append.events
    assert isinstance(event, LoginFailed) and event.reason == "deactivated"
    assert decision.outcome == "deactivated"
    after = fold(event.aggregate(), [(event, 1_800_000_000)], LoginState(v=1))
    assert after.failures == ()
