"""``streamshop verify`` passes over a log holding the account events of issue 15 (profile,
password, deactivation): the decision state and every view are the fold of the log."""

from __future__ import annotations

import asyncio

from app.commands import execute
from app.commands.profile import (
    ChangePassword,
    ChangeProfile,
    DeactivateAccount,
    ReactivateAccount,
)
from app.settings import Settings
from events.store import EventStore, Metadata
from events.types import ShippingAddress
from tests.integration.test_decision_state import streamshop
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from tests.integration.test_verify import verify_cli
from tests.support.cluster import single_and_cluster

pytestmark = single_and_cluster

META = Metadata(actor="test")
ADDRESS = ShippingAddress(line1="Rua A, 1", city="Recife", postal_code="50000-000")


async def account_events(store: EventStore, account_ids: list[str]) -> None:
    first, second = account_ids[0], account_ids[1]
    await execute(store, ChangeProfile(account_id=first, name="Zé", shipping_address=ADDRESS), META)
    state = await store.state(f"account:{first}")
    await execute(
        store,
        ChangePassword(
            account_id=first, checked_hash=state["password_hash"], password_hash="$argon2id$new"
        ),
        META,
    )
    await execute(store, DeactivateAccount(account_id=second, reason="test"), META)
    await execute(store, ReactivateAccount(account_id=second), META)
    await execute(store, DeactivateAccount(account_id=second), META)


async def test_verify_passes_over_the_account_events(settings: Settings, store: EventStore) -> None:
    shop = Shop(store)
    await shop.seed(accounts=4, products=4)
    await account_events(store, shop.accounts)

    state = await asyncio.to_thread(streamshop, store, "verify", "state")
    assert state.returncode == 0, state.stdout + state.stderr
    async with live_projector(settings) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live views")
    for view in ("read_models", "audit", "warehouse"):
        result = await asyncio.to_thread(verify_cli, settings, view)
        assert result.returncode == 0, view + result.stdout + result.stderr[-2000:]
