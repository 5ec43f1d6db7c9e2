"""The pipelined connection of the command path against the real Redis: each concurrent
call gets its own reply, errors are redis-py's, a lost connection fails its waiting calls
and the next call connects again, and the store decides and appends through it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, ResponseError

from events.errors import GuardFailed, VersionConflict
from events.ids import uuid7
from events.keys import Keys
from events.multiplexed import Multiplexed
from events.states import ProductState
from events.store import Append, EventStore
from events.types import OrderBilled, OrderLine, ProductCreated
from tests.conftest import REDIS_URL
from tests.support.projectors import eventually


@pytest.fixture
async def calls() -> AsyncIterator[Multiplexed]:
    client = aioredis.Redis.from_url(REDIS_URL)
    multiplexed = Multiplexed.serving(client)
    assert multiplexed is not None
    yield multiplexed
    await multiplexed.aclose()
    await client.aclose()


@pytest.fixture
async def piped_store(
    redis_client: aioredis.Redis, prefix: str, calls: Multiplexed
) -> AsyncIterator[EventStore]:
    store = EventStore(redis_client, Keys(prefix=prefix, partitions=4), calls=calls)
    await store.load_functions()
    yield store
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await redis_client.delete(*keys)


async def test_concurrent_calls_each_get_their_own_reply(
    calls: Multiplexed, redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = [f"{prefix}:k{i}" for i in range(300)]
    await redis_client.mset({key: f"value-{i}" for i, key in enumerate(keys)})
    try:
        replies = await asyncio.gather(*(calls.call("GET", key) for key in keys))
    finally:
        await redis_client.delete(*keys)
    assert replies == [f"value-{i}".encode() for i in range(300)]


async def test_an_error_reply_is_the_exception_redis_py_raises(
    calls: Multiplexed, redis_client: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:text"
    await redis_client.set(key, "x")
    try:
        with pytest.raises(ResponseError) as ours:
            await calls.call("HGETALL", key)
        with pytest.raises(ResponseError) as theirs:
            await redis_client.hgetall(key)
        assert await calls.call("GET", key) == b"x"  # the connection is still in step
    finally:
        await redis_client.delete(key)
    assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


async def test_a_lost_connection_fails_its_waiting_call_and_the_next_call_reconnects(
    calls: Multiplexed, redis_client: aioredis.Redis, prefix: str
) -> None:
    mine = int(await calls.call("CLIENT", "ID"))
    waiting = asyncio.create_task(calls.call("BLPOP", f"{prefix}:never", 0))

    async def blocked() -> bool:
        clients = await redis_client.client_list()
        return any(int(c["id"]) == mine and c["cmd"] == "blpop" for c in clients)

    await eventually(blocked, 10, "the BLPOP to be waiting in Redis")
    await redis_client.client_kill_filter(_id=mine)
    with pytest.raises(ConnectionError):
        await waiting
    assert int(await calls.call("CLIENT", "ID")) != mine


async def test_the_store_decides_and_appends_through_it(piped_store: EventStore) -> None:
    product = ProductCreated(product_id=uuid7(), sku=uuid7(), name="Café", price=990, stock=2)
    created = {product.aggregate(): ProductState()}
    await piped_store.append(
        Append(events=[product], expect={product.aggregate(): 0}, seen=created)
    )
    state = (await piped_store.load([product.aggregate()]))[product.aggregate()]
    assert isinstance(state, ProductState)
    assert (state.v, state.stock, state.price) == (1, 2, 990)

    def order(quantity: int) -> OrderBilled:
        line = OrderLine(
            product_id=product.product_id,
            name="Café",
            quantity=quantity,
            unit_price=990,
            line_total=990 * quantity,
        )
        return OrderBilled(
            order_id=str(uuid.uuid4()), account_id="a-1", lines=[line], total=990 * quantity
        )

    too_many = order(3)
    with pytest.raises(GuardFailed):
        await piped_store.append(
            Append(
                events=[too_many],
                expect={too_many.aggregate(): 0},
                seen={product.aggregate(): state},
            )
        )
    with pytest.raises(VersionConflict):
        await piped_store.append(Append(events=[product], expect={product.aggregate(): 0}))
    assert (await piped_store.load([product.aggregate()]))[product.aggregate()] == state


async def test_only_a_single_node_over_plain_tcp_is_multiplexed() -> None:
    """A Unix socket, TLS or RESP3 keep redis-py (the cluster client is not a ``Redis``)."""
    others = [
        aioredis.Redis(unix_socket_path="/tmp/nowhere.sock"),
        aioredis.Redis(ssl=True),
        aioredis.Redis(protocol=3),
    ]
    try:
        assert [Multiplexed.serving(client) for client in others] == [None, None, None]
        tcp = Multiplexed.serving(aioredis.Redis(host="127.0.0.1", port=6390, db=3))
        assert tcp is not None and (tcp.host, tcp.port, tcp.db) == ("127.0.0.1", 6390, 3)
    finally:
        for client in others:
            await client.aclose()


async def test_it_talks_to_the_database_the_client_names(prefix: str) -> None:
    url = REDIS_URL.rsplit("/", 1)[0] + "/1"
    client = aioredis.Redis.from_url(url)
    calls = Multiplexed.serving(client)
    assert calls is not None
    key = f"{prefix}:db1"
    try:
        await client.set(key, "in db 1")
        assert await calls.call("GET", key) == b"in db 1"
    finally:
        await client.delete(key)
        await calls.aclose()
        await client.aclose()
