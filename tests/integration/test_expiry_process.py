"""``streamshop expire`` as a real process: SIGKILLed while expiring, restarted, every unpaid
order expires exactly once and its stock returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec

from app.commands import execute
from app.commands.accounts import SignUp
from app.commands.billing import BillLine
from app.commands.cart import SetCartItem
from app.commands.catalog import CreateProduct
from app.commands.checkout import Checkout
from events.store import EventStore, Metadata
from tests.conftest import REDIS_URL
from tests.e2e.test_views_support import eventually

META = Metadata(actor="test")
BIN = Path(sys.executable).parent
ORDERS = 20


def start_worker(prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "STREAM_PREFIX": prefix,
        "STREAM_PARTITIONS": "4",
        "LOG_FORMAT": "json",
    }
    return subprocess.Popen(
        [str(BIN / "streamshop"), "expire", "--interval", "0.05"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def expired(store: EventStore) -> int:
    return len([e async for e in store.read_all() if e.type == "OrderExpired"])


async def test_a_killed_and_restarted_worker_expires_every_order_exactly_once(
    store: EventStore, prefix: str
) -> None:
    created = await execute(
        store,
        CreateProduct(sku=f"S-{uuid.uuid4().hex[:8]}", name="mug", price=100, stock=ORDERS),
        META,
    )
    product_id = msgspec.json.decode(created.result)["product_id"]
    for _ in range(ORDERS):
        signed = await execute(
            store, SignUp(email=f"{uuid.uuid4().hex[:8]}@x.co", name="A", password_hash="h"), META
        )
        account_id = msgspec.json.decode(signed.result)["account_id"]
        await execute(
            store, SetCartItem(account_id=account_id, product_id=product_id, quantity=1), META
        )
        lines = [BillLine(product_id=product_id, quantity=1)]
        await execute(store, Checkout(account_id=account_id, lines=lines, reserved_until=1), META)
    assert (await store.state(f"product:{product_id}"))["stock"] == "0"

    worker = start_worker(prefix)
    try:
        await eventually(lambda: _some(store), within=90, what="a first expiry")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert await expired(store) <= ORDERS
        worker = start_worker(prefix)
        await eventually(lambda: _all(store), within=90, what="every order expired")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    assert await expired(store) == ORDERS
    state = await store.state(f"product:{product_id}")
    assert (state["stock"], state["reserved"]) == (str(ORDERS), "0")


async def _some(store: EventStore) -> bool:
    return await expired(store) > 0


async def _all(store: EventStore) -> bool:
    return await expired(store) >= ORDERS
