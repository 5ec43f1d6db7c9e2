"""Invariant 4 on a real ``redis-server``: ``kill -9`` mid-load loses no acknowledged append.

The test owns its Redis (temp directory, free port, AOF with ``appendfsync always`` — the
configuration ``make run`` uses). Writers append concurrently; each append opens an account
and a product (two aggregates, usually two partitions) and reserves the email and the SKU.
The server is killed while appends are in flight and restarted on the same directory.
Then every acknowledged append must be there, and every append must be all or nothing:
both events, both reservations and both decision states, or none of them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from events.ids import uuid7
from events.keys import Keys
from events.store import Append, EventStore, Reservation, StateChange
from events.types import AccountCreated, ProductCreated
from tests.system.servers import RedisServer

WRITERS = 16
KILL_AFTER_ACKS = 300


@dataclass(frozen=True)
class Attempt:
    """One append as the writer sent it; ``entry_ids`` is set once Redis acknowledged it."""

    account: AccountCreated
    product: ProductCreated
    event_ids: tuple[str, str]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
async def connect(server: RedisServer) -> AsyncIterator[Callable[[], EventStore]]:
    """Clients without retries: a write that fails must fail, not be resent to a new server."""
    clients: list[aioredis.Redis] = []

    def make() -> EventStore:
        client = aioredis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
        clients.append(client)
        return EventStore(client, Keys(prefix="durability", partitions=4))

    yield make
    for client in clients:
        await client.aclose()


def new_attempt(n: int) -> Attempt:
    account = AccountCreated(
        account_id=uuid7(), email=f"user{n}@example.com", name=f"Zoë {n}", password_hash="h"
    )
    product = ProductCreated(product_id=uuid7(), sku=f"SKU-{n}", name="Café", price=990, stock=n)
    return Attempt(account, product, (uuid7(), uuid7()))


def as_append(attempt: Attempt) -> Append:
    account, product = attempt.account, attempt.product
    return Append(
        events=[account, product],
        event_ids=list(attempt.event_ids),
        expect={account.aggregate(): 0, product.aggregate(): 0},
        reserve=[
            Reservation("email", account.email, account.aggregate()),
            Reservation("sku", product.sku, product.aggregate()),
        ],
        state={product.aggregate(): StateChange(set={"stock": product.stock})},
    )


async def load_until_killed(
    store: EventStore, server: RedisServer
) -> tuple[list[Attempt], dict[int, list[tuple[int, str]]]]:
    """Concurrent appends until ``KILL_AFTER_ACKS`` are acknowledged, then ``kill -9``."""
    attempts: list[Attempt] = []
    acked: dict[int, list[tuple[int, str]]] = {}
    numbers = itertools.count()
    enough = asyncio.Event()

    async def writer() -> None:
        while True:
            n = next(numbers)
            attempt = new_attempt(n)
            attempts.append(attempt)
            try:
                result = await store.append(as_append(attempt))
            except RedisError:  # the server is gone: this append may or may not have happened
                return
            acked[n] = result.entry_ids
            if len(acked) >= KILL_AFTER_ACKS:
                enough.set()

    writers = [asyncio.create_task(writer()) for _ in range(WRITERS)]
    async with asyncio.timeout(120):
        await enough.wait()
    server.kill9()
    async with asyncio.timeout(60):
        await asyncio.gather(*writers)
    return attempts, acked


async def test_kill_9_mid_load_loses_no_acknowledged_append_and_applies_none_by_half(
    server: RedisServer, connect: Callable[[], EventStore]
) -> None:
    store = connect()
    await store.load_functions()
    attempts, acked = await load_until_killed(store, server)
    assert len(attempts) > len(acked), "the kill should catch appends in flight"

    server.start()
    after = connect()
    entries = {
        event.id: (event.partition, event.entry_id, event) async for event in after.read_all()
    }

    for n, entry_ids in acked.items():
        attempt = attempts[n]
        for event_id, (partition, entry_id) in zip(attempt.event_ids, entry_ids, strict=True):
            assert event_id in entries, f"acknowledged append {n} lost event {event_id}"
            assert entries[event_id][:2] == (partition, entry_id)

    applied = 0
    for attempt in attempts:
        account, product = attempt.account, attempt.product
        in_log = [event_id in entries for event_id in attempt.event_ids]
        reserved = [
            await after.owner_of("email", account.email) == account.aggregate(),
            await after.owner_of("sku", product.sku) == product.aggregate(),
        ]
        account_state, product_state = await after.states(
            [account.aggregate(), product.aggregate()]
        )
        states = [account_state.get("v") == "1", product_state.get("v") == "1"]
        facts = in_log + reserved + states
        assert all(facts) or not any(facts), f"half-applied append: {account.email} {facts}"
        if all(facts):
            applied += 1
            assert entries[attempt.event_ids[1]][2].event == product
            assert product_state["stock"] == str(product.stock)

    assert applied >= len(acked)
    assert len(entries) == 2 * applied, "the log holds events of no attempt"
