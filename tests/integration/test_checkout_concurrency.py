"""Checkouts racing for the last units, on one event loop (truly interleaved, unlike requests
through the test client): the guarded stock counter lets exactly the stock through."""

from __future__ import annotations

import asyncio
import uuid

import msgspec

from app.commands import execute
from app.commands.accounts import SignUp
from app.commands.billing import BillLine
from app.commands.cart import SetCartItem
from app.commands.catalog import CreateProduct
from app.commands.checkout import Checkout
from app.commands.errors import InsufficientStock
from events.store import EventStore, Metadata
from tests.support.cluster import single_and_cluster
from workers.state import verify_state

pytestmark = single_and_cluster

META = Metadata(actor="test")


async def test_ten_concurrent_checkouts_on_stock_five_reserve_exactly_five(
    store: EventStore,
) -> None:
    created = await execute(
        store, CreateProduct(sku=f"S-{uuid.uuid4().hex[:8]}", name="mug", price=100, stock=5), META
    )
    product_id = msgspec.json.decode(created.result)["product_id"]
    accounts = []
    for _ in range(10):
        signed = await execute(
            store, SignUp(email=f"{uuid.uuid4().hex[:8]}@x.co", name="A", password_hash="h"), META
        )
        account_id = msgspec.json.decode(signed.result)["account_id"]
        await execute(
            store, SetCartItem(account_id=account_id, product_id=product_id, quantity=1), META
        )
        accounts.append(account_id)
    lines = [BillLine(product_id=product_id, quantity=1)]
    outcomes = await asyncio.gather(
        *(execute(store, Checkout(account_id=a, lines=lines), META) for a in accounts),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, InsufficientStock)]
    assert len(refused) == 5 and len(outcomes) - len(refused) == 5, outcomes
    assert all(r.extra["product_id"] == product_id for r in refused)
    state = await store.state(f"product:{product_id}")
    assert (state["stock"], state["reserved"]) == ("0", "5")
    assert (await verify_state(store)).ok
