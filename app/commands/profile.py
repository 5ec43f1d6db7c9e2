"""An existing account's own changes and an admin's: profile, password, (de)activation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, TypeVar

import msgspec

from app.commands.accounts import AccountName, account_aggregate
from app.commands.base import Command, result_json
from app.commands.errors import DomainError, EmptyUpdate
from app.commands.runner import Decider, state_of
from events.states import AccountState, AggregateState
from events.store import Append
from events.types import (
    AccountDeactivated,
    AccountProfileChanged,
    AccountReactivated,
    BaseEvent,
    PasswordChanged,
    ShippingAddress,
)


class NoSuchAccount(DomainError):
    """The account a profile or admin command names does not exist."""

    status = 404
    slug = "account-not-found"
    title = "Account not found"


class WrongPassword(DomainError):
    """``current_password`` is not the account's password (403, not 401: the token is fine)."""

    status = 403
    slug = "wrong-password"
    title = "Current password is wrong"


class AccountInactive(DomainError):
    """A deactivated account may not change itself (its access token is still unexpired)."""

    status = 403
    slug = "account-deactivated"
    title = "Account deactivated"


class ActivationUnchanged(DomainError):
    """Deactivating a deactivated account, or reactivating an active one."""

    status = 409
    slug = "activation-unchanged"
    title = "Account already in that state"


class ChangeProfile(Command, frozen=True, kw_only=True):
    """Change the name and/or shipping address; ``None`` leaves a field as it is."""

    account_id: str
    name: AccountName | None = None
    shipping_address: ShippingAddress | None = None


class ChangePassword(Command, frozen=True, kw_only=True):
    """Replace the password. The caller checked the current password against
    ``checked_hash`` (hashing is slow and not a decision); the decision refuses if the
    stored hash is no longer that one, so two concurrent changes cannot both pass."""

    account_id: str
    checked_hash: Annotated[str, msgspec.Meta(min_length=1)]
    password_hash: Annotated[str, msgspec.Meta(min_length=1)]


class DeactivateAccount(Command, frozen=True, kw_only=True):
    account_id: str
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class ReactivateAccount(Command, frozen=True, kw_only=True):
    account_id: str


def _existing(state: AccountState, account_id: str) -> None:
    if not state.exists:
        raise NoSuchAccount(f"account {account_id} does not exist", field="account_id")


def _append(account_id: str, state: AccountState, event: BaseEvent) -> Append:
    aggregate = account_aggregate(account_id)
    return Append(
        events=[event],  # type: ignore[list-item]
        expect={aggregate: state.v},
        seen={aggregate: state},
        result=result_json({"account_id": account_id}),
    )


def decide_change_profile(cmd: ChangeProfile, state: AccountState) -> Append:
    _existing(state, cmd.account_id)
    if not state.active:
        raise AccountInactive("this account is deactivated")
    if cmd.name is None and cmd.shipping_address is None:
        raise EmptyUpdate("give a name or a shipping_address to change")
    event = AccountProfileChanged(
        account_id=cmd.account_id, name=cmd.name, shipping_address=cmd.shipping_address
    )
    return _append(cmd.account_id, state, event)


def decide_change_password(cmd: ChangePassword, state: AccountState) -> Append:
    _existing(state, cmd.account_id)
    if not state.active:
        raise AccountInactive("this account is deactivated")
    if not state.password_hash or state.password_hash != cmd.checked_hash:
        raise WrongPassword("current_password is wrong", field="current_password")
    event = PasswordChanged(account_id=cmd.account_id, password_hash=cmd.password_hash)
    return _append(cmd.account_id, state, event)


def decide_deactivate(cmd: DeactivateAccount, state: AccountState) -> Append:
    _existing(state, cmd.account_id)
    if not state.active:
        raise ActivationUnchanged(f"account {cmd.account_id} is already deactivated")
    event = AccountDeactivated(account_id=cmd.account_id, reason=cmd.reason)
    return _append(cmd.account_id, state, event)


def decide_reactivate(cmd: ReactivateAccount, state: AccountState) -> Append:
    _existing(state, cmd.account_id)
    if state.active:
        raise ActivationUnchanged(f"account {cmd.account_id} is active")
    return _append(cmd.account_id, state, AccountReactivated(account_id=cmd.account_id))


C = TypeVar(
    "C", ChangeProfile, ChangePassword, DeactivateAccount, ReactivateAccount, covariant=False
)


def _on_account(decide: Callable[[C, AccountState], Append]) -> Decider[C]:
    """A decider over the one account the command names."""

    def run(command: C, states: Mapping[str, AggregateState]) -> Append:
        aggregate = account_aggregate(command.account_id)
        return decide(command, state_of(states, aggregate, AccountState))

    return Decider(reads=lambda c: [account_aggregate(c.account_id)], decide=run)


CHANGE_PROFILE: Decider[ChangeProfile] = _on_account(decide_change_profile)
CHANGE_PASSWORD: Decider[ChangePassword] = _on_account(decide_change_password)
DEACTIVATE_ACCOUNT: Decider[DeactivateAccount] = _on_account(decide_deactivate)
REACTIVATE_ACCOUNT: Decider[ReactivateAccount] = _on_account(decide_reactivate)
"""Each result JSON: ``{"account_id": ...}``."""
