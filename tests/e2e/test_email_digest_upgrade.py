"""Accounts signed up before keyed email digests, on the real Redis.

Their entries are written as the code of that time wrote them (schema 1 ``AccountCreated``
with the email and name in clear, the decision-state hash without the newer fields, and the
email reserved under the address itself: ``Reservation("email", email, …)``, so the key's
name is the address's unkeyed hash). Such an account must log in, move its reservation to
the keyed digest on that first login, keep its email unique before and after, and leave a
decision state that is the fold of the log.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

import jwt
import msgspec
from litestar.testing import AsyncTestClient

from app.commands.accounts import email_reservation
from app.commands.login import LogIn, LoginLimits
from app.commands.login import log_in as log_in_command
from app.passwords import Passwords
from events.keys import digest
from events.states import AccountState
from events.store import Append, EventStore, Metadata, Reservation, StateChange
from tests.e2e import (
    PASSWORD,
    TEST_AUTH,
    TEST_JWT_SECRET,
    admin,
    api_fixture,  # noqa: F401
    assert_problem,
    events_of_type,
    log_in,
)
from tests.support.cluster import single_and_cluster
from workers.state import fold_log, rebuild_state, verify_state

pytestmark = single_and_cluster


class AccountCreated(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """``AccountCreated`` as schema 1 declared it (no ``email_digest``, nothing sealed). Its
    own class, named as the old one: the store takes an entry's type from the class name
    and its schema from ``SCHEMA``."""

    SCHEMA: ClassVar[int] = 1

    account_id: str
    email: str
    name: str
    password_hash: str
    role: str = "customer"

    def aggregate(self) -> str:
        return f"account:{self.account_id}"


async def legacy_account(store: EventStore) -> tuple[str, str]:
    """An account as the sign-up of before keyed digests appended it: (account id, email)."""
    email = f"antiga.{uuid.uuid4().hex[:10]}@example.com"
    # The account, its old name and its keyed name in three partitions, so that on the
    # cluster the upgrade spans three slots (the case a node moved to a cluster leaves).
    names = {"email:" + digest(email), "email:" + digest(store.personal.email_digest(email))}
    taken = {store.keys.partition_of(n) for n in names}
    account_id = str(uuid.uuid4())
    while store.keys.partition_of(f"account:{account_id}") in taken:
        account_id = str(uuid.uuid4())
    aggregate = f"account:{account_id}"
    password_hash = await Passwords(TEST_AUTH).hash(PASSWORD)
    event = AccountCreated(
        account_id=account_id, email=email, name="Conta Antiga", password_hash=password_hash
    )
    old_hash = {"email": email, "name": "Conta Antiga", "role": "customer"}
    old_hash |= {"password_hash": password_hash, "active": 1}
    reserve = [Reservation("email", email, aggregate)]
    if store.clustered:  # one node wrote both; on the cluster they are two slots' keys
        await store.redis.set(store.keys.uniq("email", email), aggregate)
        reserve = []
    await store.append(
        Append(
            events=[event],  # type: ignore[list-item]
            expect={aggregate: 0},
            reserve=reserve,
            state={aggregate: StateChange(set=old_hash)},
        )
    )
    return account_id, email


async def sign_up_again(api: AsyncTestClient[Any], email: str) -> Any:
    body = {"name": "Outra", "email": email, "password": PASSWORD}
    return await api.post("/accounts", json=body)


async def test_a_legacy_account_logs_in_and_its_reservation_moves_to_the_keyed_digest(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, email = await legacy_account(store)
    aggregate = f"account:{account_id}"
    keyed = store.personal.email_digest(email)
    assert await store.owner_of("email", email) == aggregate
    assert await store.owner_of("email", keyed) is None

    token = await log_in(api, email)

    assert jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"])["sub"] == account_id
    assert await store.owner_of("email", keyed) == aggregate
    assert await store.owner_of("email", email) is None
    [upgraded] = await events_of_type(store, "EmailDigestUpgraded")
    assert upgraded.event.email_digest == keyed
    assert email not in upgraded.event.email  # sealed
    state = (await store.load([aggregate]))[aggregate]
    assert isinstance(state, AccountState)
    assert email_reservation(state) == ("email", keyed)
    assert await log_in(api, email)  # the second login finds the keyed reservation
    assert len(await events_of_type(store, "EmailDigestUpgraded")) == 1


async def test_a_second_sign_up_with_a_legacy_email_is_refused_before_and_after_the_upgrade(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    _, email = await legacy_account(store)

    before = assert_problem(await sign_up_again(api, email), 409, "duplicate-email")
    await log_in(api, email)
    after = assert_problem(await sign_up_again(api, email), 409, "duplicate-email")

    assert before["field"] == after["field"] == "email"
    assert len(await events_of_type(store, "AccountCreated")) == 1


async def test_the_decision_state_after_an_upgrade_is_the_fold_of_the_log(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, email = await legacy_account(store)
    aggregate = f"account:{account_id}"
    await log_in(api, email)

    await rebuild_state(store)  # backfills the fields the old hash lacked (forgotten, …)
    report = await verify_state(store)

    assert report.ok, [str(d) for d in report.differences]
    folded, _ = await fold_log(store)
    kind, value = email_reservation(folded[aggregate]) or ("", "")
    assert await store.owner_of(kind, value) == aggregate
    assert value == store.personal.email_digest(email)


async def test_forgetting_a_legacy_account_frees_its_old_reservation(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, email = await legacy_account(store)
    headers = await admin(api, store)

    resp = await api.delete(f"/accounts/{account_id}", headers=headers)

    assert resp.status_code in (200, 204), resp.text
    assert await store.owner_of("email", email) is None
    again = await sign_up_again(api, email)
    assert again.status_code == 201, again.text


async def test_verify_state_names_a_legacy_email_held_twice_and_a_lost_reservation(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    account_id, email = await legacy_account(store)
    await rebuild_state(store)
    assert (await verify_state(store)).ok
    # What the sign-up of before this fix let through: the same address under its keyed name.
    intruder = "account:intruder"
    await store.redis.set(store.keys.uniq("email", store.personal.email_digest(email)), intruder)
    await store.redis.delete(store.keys.uniq("email", email))

    report = await verify_state(store)

    assert sorted(str(r) for r in report.reservations) == [
        f"account:{account_id}: its email reservation is not held",
        f"account:{account_id}: its email, reserved under its old name, is also held by "
        f"{intruder} under its keyed digest",
    ]
    assert not report.ok


async def test_concurrent_first_logins_upgrade_the_reservation_once(store: EventStore) -> None:
    account_id, email = await legacy_account(store)
    passwords = Passwords(TEST_AUTH)

    results = await asyncio.gather(
        *(
            log_in_command(
                store,
                LogIn(email=email, password=PASSWORD),
                Metadata(actor="test"),
                passwords=passwords,
                limits=LoginLimits(),
            )
            for _ in range(4)
        )
    )

    assert {r.account_id for r in results} == {account_id}
    assert len(await events_of_type(store, "EmailDigestUpgraded")) == 1
    assert (
        await store.owner_of("email", store.personal.email_digest(email)) == f"account:{account_id}"
    )
    assert await store.owner_of("email", email) is None
    assert (await verify_state(store)).reservations == []


async def test_an_upgrade_cut_off_after_taking_the_keyed_name_is_finished_by_the_next_login(
    api: AsyncTestClient[Any], store: EventStore
) -> None:
    """The cluster's crash point between reserving the keyed name and the account's append:
    both names are the account's, the email stays taken, and the next login moves on."""
    account_id, email = await legacy_account(store)
    await rebuild_state(store)  # the newer state fields, as the other tests here
    aggregate = f"account:{account_id}"
    keyed = store.personal.email_digest(email)
    await store.redis.set(store.keys.uniq("email", keyed), aggregate)  # what the step left

    assert_problem(await sign_up_again(api, email), 409, "duplicate-email")
    assert await log_in(api, email)

    assert len(await events_of_type(store, "EmailDigestUpgraded")) == 1
    assert await store.owner_of("email", keyed) == aggregate
    assert await store.owner_of("email", email) is None
    report = await verify_state(store)
    assert report.ok, (report.differences, report.reservations, report.busy)
