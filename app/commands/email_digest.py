"""Moving an email reserved before keyed digests forward to its keyed digest.

Accounts signed up before :mod:`events.personal` existed hold their email reservation under
the address itself (the key's name is its unkeyed hash) and their email in clear in the
decision state. Their first successful login (:func:`app.commands.login.log_in`) knows the
address, so it appends ``EmailDigestUpgraded``: in one atomic append the reservation moves
to the keyed digest and the state's email is sealed. The log then says where every
reservation is, so ``streamshop rebuild state`` folds to the same account state.
"""

from __future__ import annotations

import msgspec
import structlog

from app.commands.accounts import account_aggregate, email_reservation
from app.commands.base import Command, result_json
from app.commands.errors import DomainError
from app.commands.profile import NoSuchAccount
from app.commands.runner import Decider, state_of
from events.errors import SlotsDiffer
from events.personal import is_sealed
from events.states import AccountState
from events.store import Append, EventStore, Metadata, Reservation
from events.types import EmailDigestUpgraded

log = structlog.get_logger("app.commands.email_digest")


class DigestCurrent(DomainError):
    """The account's email is not reserved under the old name (already upgraded, or not
    the address the command names)."""

    status = 409
    slug = "email-digest-current"
    title = "Email reservation is already keyed"


class UpgradeEmailDigest(Command, frozen=True, kw_only=True):
    """Move ``email``'s reservation from its old name to its keyed digest; issued by login
    once the password matched, so ``email`` is the account's own address."""

    account_id: str
    email: str
    """Normalised; never stored: only its keyed digest and its sealed form are."""
    sealed_email: str = ""
    """Set by :func:`seal_upgrade`: ``email`` sealed with the account's key."""
    email_digest: str = ""
    """Set by :func:`seal_upgrade`: the keyed digest the reservation moves to."""


def decide_upgrade(cmd: UpgradeEmailDigest, state: AccountState) -> Append:
    """Only an account whose reservation is still the old one of exactly this address moves;
    the append expects its version, takes the keyed name (refused if held) and frees the
    old one, so the email is reserved under one name at every moment."""
    if not (is_sealed(cmd.sealed_email) and cmd.email_digest):
        raise ValueError("personal data must be sealed before deciding")
    if not state.exists or state.forgotten:
        raise NoSuchAccount(f"account {cmd.account_id} does not exist", field="account_id")
    if email_reservation(state) != ("email", cmd.email):
        raise DigestCurrent(
            f"account {cmd.account_id} holds no old email reservation of this address",
            field="email",
        )
    aggregate = account_aggregate(cmd.account_id)
    event = EmailDigestUpgraded(
        account_id=cmd.account_id, email_digest=cmd.email_digest, email=cmd.sealed_email
    )
    return Append(
        events=[event],
        expect={aggregate: state.v},
        reserve=[Reservation("email", cmd.email_digest, aggregate)],
        release=[("email", cmd.email)],
        seen={aggregate: state},
        result=result_json({"account_id": cmd.account_id}),
    )


async def seal_upgrade(cmd: UpgradeEmailDigest, store: EventStore) -> UpgradeEmailDigest:
    """The keyed digest, and the address sealed with the account's key (made now: accounts
    of that time have none unless they changed their profile since)."""
    seal = await store.personal.sealer(cmd.account_id)
    return msgspec.structs.replace(
        cmd,
        sealed_email=seal("email", cmd.email),
        email_digest=store.personal.email_digest(cmd.email),
    )


UPGRADE_EMAIL_DIGEST: Decider[UpgradeEmailDigest] = Decider(
    reads=lambda c: [account_aggregate(c.account_id)],
    decide=lambda c, s: decide_upgrade(
        c, state_of(s, account_aggregate(c.account_id), AccountState)
    ),
    seal=seal_upgrade,
)
"""Result JSON: ``{"account_id": ...}``."""


async def upgrade_email_digest(
    store: EventStore, command: UpgradeEmailDigest, meta: Metadata
) -> bool:
    """Upgrade, for a login that already succeeded: whether this call moved the reservation.

    A refusal (a concurrent login upgraded it first, the account changed meanwhile past the
    retries) leaves the login as it was; the next login tries again. On a Redis Cluster the
    keyed name is taken before the account's append and the old one freed after it
    (:mod:`app.commands.slots`). Nothing personal is logged.
    """
    from app.commands import execute

    try:
        await execute(store, command, meta)
    except DomainError as exc:
        log.info("email_digest_upgrade_skipped", account_id=command.account_id, reason=exc.slug)
        return False
    except SlotsDiffer:
        # Not expected any more: on a Redis Cluster the upgrade runs as single-slot steps
        # (app.commands.slots). Should an append still span slots, the login stands and the
        # reservation stays where it was.
        log.warning("email_digest_upgrade_skipped", account_id=command.account_id, reason="slots")
        return False
    log.info("email_digest_upgraded", account_id=command.account_id)
    return True
