"""The sequenced dead-letter scenario every view is tested with (no tests here).

A view's real store rejects one product's writes for a while (a PostgreSQL trigger, a
MongoDB validator); orders for it and that product's own events fail and are parked while
other orders go on into every partition; the rejection is lifted; ``streamshop dlq retry``
re-drives the parked sequences; then ``streamshop verify`` must pass and the rows be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from app.commands import execute
from app.commands.billing import BillLine, BillOrder
from app.commands.catalog import AdjustStock, UpdateProduct
from app.settings import Settings
from events.ids import uuid7
from events.store import EventStore
from tests.integration.test_rebuild_interrupted import ROOT, cli_env
from tests.integration.test_rebuild_support import META, Shop, caught_up, eventually
from tests.support.projectors import group_state
from workers.dlq import metrics_key
from workers.registry import open_projections
from workers.runner import ProjectorRunner


@contextlib.asynccontextmanager
async def projector(settings: Settings, view: str) -> AsyncIterator[ProjectorRunner]:
    """The real runner over one registered view, giving up on an entry after 2 attempts."""
    redis = aioredis.Redis.from_url(settings.redis.url)
    try:
        async with open_projections(settings, [view]) as projections:
            runner = ProjectorRunner(
                redis,
                settings.redis.keys,
                projections,
                consumer=f"dlq-{uuid.uuid4().hex[:6]}",
                batch=200,
                block_ms=100,
                lease_ms=3000,
                max_attempts=2,
                retry_base_ms=10,
                backoff_base_ms=50,
                backoff_max_ms=200,
            )
            task = asyncio.create_task(runner.run())
            try:
                yield runner
            finally:
                runner.stop()
                await asyncio.wait_for(task, 30)
    finally:
        await redis.aclose()


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=180,
    )


async def bill(
    store: EventStore, account: str, products: list[str], partition: int | None = None
) -> str:
    """Bill one of each product; ``partition``: with an order id that lives there."""
    order_id = None
    while partition is not None and order_id is None:
        candidate = uuid7()
        if store.keys.partition_of(f"order:{candidate}") == partition:
            order_id = candidate
    lines = [BillLine(product_id=p, quantity=1) for p in products]
    command = BillOrder(account_id=account, lines=lines, order_id=order_id)
    result = await execute(store, command, META)
    return str(json.loads(result.result)["receipt"]["order_id"])


@dataclass
class Sink:
    """How a test makes one view's store reject, and accept again, one product's writes,
    and how it sees which orders landed."""

    reject: Callable[[str], Awaitable[None]]
    accept: Callable[[], Awaitable[None]]
    landed: Callable[[list[str]], Awaitable[set[str]]]
    """The ones of these order ids the live view holds."""
    partition_wide: bool = False
    """The view's sequences are partitions (the audit): a failure parks its partition."""
    atomic: bool = True
    """A failed order leaves nothing (PostgreSQL); else its order document may land."""


async def parked(store: EventStore, view: str) -> int:
    """Entries in the view's DLQ."""
    return int(await store.redis.xlen(store.keys.dlq(view)))


async def delivered(store: EventStore, view: str) -> bool:
    keys = store.keys
    state = await group_state(store.redis, keys.prefix, keys.partitions, view)
    return state["pending"] == 0 and state["lag"] == 0


STUCK = 0
"""The partition the orders of the rejected product are billed in."""


async def parked_sequences_are_redriven_and_land(
    settings: Settings, store: EventStore, view: str, sink: Sink
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=3, products=4)
    rejected, partner, *others = shop.products
    async with projector(settings, view) as runner:
        await eventually(lambda: caught_up(store, runner), what=f"the {view} view")
        await sink.reject(rejected)
        stuck: list[str] = []
        flowing: list[str] = []
        for i in range(8):
            account = shop.accounts[i % len(shop.accounts)]
            # With a partner product, part of an order's effects can land before it fails.
            stuck.append(await bill(store, account, [rejected, partner], partition=STUCK))
            flowing.append(await bill(store, account, others))
        await execute(store, UpdateProduct(product_id=rejected, price=777), META)
        await execute(store, AdjustStock(product_id=rejected, delta=5, reason="in"), META)
        for i in range(8):
            flowing.append(await bill(store, shop.accounts[i % len(shop.accounts)], others))
        # The last entry of its partition: once re-driven, only the retry can move that
        # partition's checkpoint over it (verify compares at the checkpoints).
        last = await bill(store, shop.accounts[0], [rejected], partition=STUCK)
        stuck.append(last)

        async def parked_and_delivered() -> bool:
            return await delivered(store, view) and await parked(store, view) >= len(stuck)

        await eventually(parked_and_delivered, within=60, what="stuck orders parked")
        if sink.atomic:
            assert await sink.landed(stuck) == set()
        blocked = {STUCK, store.keys.partition_of(f"product:{rejected}")}
        free = {
            order
            for order in flowing
            if not sink.partition_wide or store.keys.partition_of(f"order:{order}") not in blocked
        }
        assert free, "no order can flow past the parked ones"
        assert await sink.landed(flowing) >= free
        await sink.accept()
        retried = await asyncio.to_thread(cli, settings, "dlq", "retry", view)
        assert retried.returncode == 0, retried.stdout + retried.stderr[-2000:]
        assert await parked(store, view) == 0
        # The product's sequence has ended: its next order is applied as usual.
        stuck.append(await bill(store, shop.accounts[0], [rejected], partition=STUCK + 1))
        await eventually(lambda: caught_up(store, runner), within=60, what="caught up")
    lost = sorted(set(stuck) - await sink.landed(stuck))
    assert not lost, f"{len(lost)} re-driven orders missing in live: {lost[:3]}"
    assert await sink.landed(flowing) == set(flowing)
    verified = await asyncio.to_thread(cli, settings, "verify", view, "--show", "5")
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    lag = await asyncio.to_thread(cli, settings, "lag", view, "--json")
    assert [json.loads(line)["parked"] for line in lag.stdout.splitlines()] == [0] * (
        store.keys.partitions
    )
    assert (await store.redis.hget(metrics_key(store.keys, view), "parked")) == b"0"
