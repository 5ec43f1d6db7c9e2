"""Moving an email reserved before keyed digests forward, with plain data: given events,
when command, then events and reservations, or a named error."""

from __future__ import annotations

import pytest

from app.commands.accounts import email_reservation
from app.commands.email_digest import DigestCurrent, UpgradeEmailDigest, decide_upgrade
from app.commands.profile import ForgetCustomer, NoSuchAccount, decide_forget
from events.states import AccountState, fold
from events.store import Reservation
from events.types import AccountCreated, CustomerForgotten, EmailDigestUpgraded

EMAIL = "ana@x.com"
LEGACY = AccountCreated(
    account_id="a1", email=EMAIL, name="Ana", password_hash="h1", email_digest="unkeyed"
)
"""Schema 1 as upcast: clear email, the unkeyed digest."""
UPGRADE = UpgradeEmailDigest(
    account_id="a1", email=EMAIL, sealed_email="pii1:sealed", email_digest="keyed"
)


def given(*events: object) -> AccountState:
    state: AccountState = fold("account:a1", list(events))
    return state


def test_a_legacy_account_is_reserved_under_its_address() -> None:
    assert email_reservation(given(LEGACY)) == ("email", EMAIL)


def test_the_upgrade_moves_the_reservation_and_seals_the_email() -> None:
    state = given(LEGACY)

    append = decide_upgrade(UPGRADE, state)

    assert append.events == [
        EmailDigestUpgraded(account_id="a1", email_digest="keyed", email="pii1:sealed")
    ]
    assert append.expect == {"account:a1": 1}
    assert append.reserve == [Reservation("email", "keyed", "account:a1")]
    assert append.release == [("email", EMAIL)]
    after = given(LEGACY, *append.events)
    assert email_reservation(after) == ("email", "keyed")
    assert after.email == "pii1:sealed"


def test_an_upgraded_account_is_not_upgraded_again() -> None:
    upgraded = given(LEGACY, decide_upgrade(UPGRADE, given(LEGACY)).events[0])

    with pytest.raises(DigestCurrent) as refused:
        decide_upgrade(UPGRADE, upgraded)

    assert refused.value.field == "email"


def test_an_upgrade_naming_another_address_is_refused() -> None:
    other = UpgradeEmailDigest(
        account_id="a1", email="eve@x.com", sealed_email="pii1:s", email_digest="k"
    )

    with pytest.raises(DigestCurrent):
        decide_upgrade(other, given(LEGACY))


def test_a_forgotten_account_is_not_upgraded() -> None:
    with pytest.raises(NoSuchAccount):
        decide_upgrade(UPGRADE, given(LEGACY, CustomerForgotten(account_id="a1")))


def test_forgetting_a_legacy_account_releases_its_old_reservation() -> None:
    append = decide_forget(ForgetCustomer(account_id="a1"), given(LEGACY))

    assert append.release == [("email", EMAIL)]
