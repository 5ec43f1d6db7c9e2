"""An existing account's own changes and an admin's: profile, password, (de)activation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, TypeVar

import msgspec

from app.commands.accounts import AccountName, account_aggregate, email_reservation
from app.commands.base import Command, result_json
from app.commands.errors import DomainError, EmptyUpdate
from app.commands.runner import Decider, state_of
from events.states import AccountState, AggregateState
from events.store import Append, EventStore, Metadata
from events.types import (
    AccountDeactivated,
    AccountProfileChanged,
    AccountReactivated,
    BaseEvent,
    CustomerForgotten,
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
    sealed_name: str | None = None
    """Set by :func:`seal_profile`: ``name`` sealed with the account's key."""
    sealed_address: str | None = None
    """Set by :func:`seal_profile`: ``shipping_address`` as JSON, sealed."""


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


class ForgetCustomer(Command, frozen=True, kw_only=True):
    """Forget the account for good: ``CustomerForgotten``, the email's reservation released.
    The caller destroys the key after the append (:func:`forget_customer`)."""

    account_id: str


def _existing(state: AccountState, account_id: str) -> None:
    """A forgotten account is gone as far as every command is concerned."""
    if not state.exists or state.forgotten:
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
    if (cmd.name is None) != (cmd.sealed_name is None) or (cmd.shipping_address is None) != (
        cmd.sealed_address is None
    ):
        raise ValueError("personal data must be sealed before deciding")
    event = AccountProfileChanged(
        account_id=cmd.account_id, name=cmd.sealed_name, shipping_address=cmd.sealed_address
    )
    return _append(cmd.account_id, state, event)


async def seal_profile(cmd: ChangeProfile, store: EventStore) -> ChangeProfile:
    """Seal the new name and address with the account's key (made now for an account from
    before sealing). A forgotten or unknown account is refused before any key is made."""
    aggregate = account_aggregate(cmd.account_id)
    _existing(state_of(await store.load([aggregate]), aggregate, AccountState), cmd.account_id)
    seal = await store.personal.sealer(cmd.account_id)
    address = cmd.shipping_address
    return msgspec.structs.replace(
        cmd,
        sealed_name=None if cmd.name is None else seal("name", cmd.name),
        sealed_address=None
        if address is None
        else seal("shipping_address", msgspec.json.encode(address).decode()),
    )


def decide_forget(cmd: ForgetCustomer, state: AccountState) -> Append:
    """Forgetting is for customers: an admin account is refused (409 naming the role), so
    the shop cannot lose its last administrator this way. Already forgotten: 404."""
    _existing(state, cmd.account_id)
    if state.role != "customer":
        raise CannotForget(
            f"account {cmd.account_id} has role {state.role!r}; only customers are forgotten",
            field="account_id",
        )
    append = _append(cmd.account_id, state, CustomerForgotten(account_id=cmd.account_id))
    if (reservation := email_reservation(state)) is not None:
        append.release = [reservation]
    return append


async def forget_customer(store: EventStore, command: ForgetCustomer, meta: Metadata) -> str:
    """Append ``CustomerForgotten`` (releasing the email), then destroy the account's key;
    the position of the append.

    The key goes after the append, so a crash in between leaves a forgotten account whose
    views are already scrubbed and whose key is destroyed by the next attempt: forgetting
    a forgotten account destroys the key again before answering 404.
    """
    from app.commands import execute

    try:
        result = await execute(store, command, meta)
    except NoSuchAccount:
        aggregate = account_aggregate(command.account_id)
        if state_of(await store.load([aggregate]), aggregate, AccountState).forgotten:
            await store.personal.forget(command.account_id)
        raise
    await store.personal.forget(command.account_id)
    return result.position


class CannotForget(DomainError):
    """Forgetting an account that is not a customer's."""

    status = 409
    slug = "cannot-forget"
    title = "Only customer accounts can be forgotten"


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
    "C",
    ChangeProfile,
    ChangePassword,
    DeactivateAccount,
    ReactivateAccount,
    ForgetCustomer,
    covariant=False,
)


def _on_account(
    decide: Callable[[C, AccountState], Append],
    seal: Callable[[C, EventStore], Awaitable[C]] | None = None,
) -> Decider[C]:
    """A decider over the one account the command names."""

    def run(command: C, states: Mapping[str, AggregateState]) -> Append:
        aggregate = account_aggregate(command.account_id)
        return decide(command, state_of(states, aggregate, AccountState))

    return Decider(reads=lambda c: [account_aggregate(c.account_id)], decide=run, seal=seal)


CHANGE_PROFILE: Decider[ChangeProfile] = _on_account(decide_change_profile, seal_profile)
FORGET_CUSTOMER: Decider[ForgetCustomer] = _on_account(decide_forget)
CHANGE_PASSWORD: Decider[ChangePassword] = _on_account(decide_change_password)
DEACTIVATE_ACCOUNT: Decider[DeactivateAccount] = _on_account(decide_deactivate)
REACTIVATE_ACCOUNT: Decider[ReactivateAccount] = _on_account(decide_reactivate)
"""Each result JSON: ``{"account_id": ...}``."""
