"""The live event feeds over a real ``uvicorn`` process (an SSE response never ends, so it
needs a real server): a new order arrives, and a reconnect with ``Last-Event-ID`` gets
exactly the entries it missed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.positions import parse_position, parse_stream_id
from events.store import EventStore
from tests.e2e import admin, create_product, customer
from tests.e2e.test_ops_support import live_api
from tests.integration.test_archive import store_settings
from workers.archive import ArchiveOptions, archive

WAIT = 30.0
"""Bound on every wait for an event (generous for a loaded machine; not a latency check)."""


@dataclass(frozen=True)
class Sse:
    id: str
    data: dict[str, Any]


@pytest.fixture(name="live")
def live_fixture(prefix: str, store: EventStore) -> Iterator[str]:
    """The API in its own process on the test's prefix (``store`` cleans up)."""
    with live_api(prefix, store.keys.partitions) as url:
        yield url


@contextlib.asynccontextmanager
async def feed(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], *, id_only: bool = False
) -> AsyncIterator[AsyncIterator[Sse]]:
    """An open SSE connection; yields its messages (comments skipped; messages with an id
    and no data, which a browser does not dispatch, only with ``id_only``)."""
    async with client.stream("GET", path, headers=headers, timeout=None) as resp:
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")

        async def messages() -> AsyncIterator[Sse]:
            event_id, data = "", ""
            async for line in resp.aiter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line == "" and (data or (id_only and event_id)):
                    yield Sse(event_id, json.loads(data) if data else {})
                    event_id, data = "", ""

        yield messages()


async def next_message(messages: AsyncIterator[Sse]) -> Sse:
    async with asyncio.timeout(WAIT):
        return await anext(messages)


async def until(messages: AsyncIterator[Sse], event_type: str, **data: Any) -> Sse:
    """The first message of ``event_type`` whose ``data`` has these values (bounded wait)."""
    async with asyncio.timeout(WAIT):
        async for msg in messages:
            fields = msg.data["data"]
            if msg.data["type"] == event_type and all(fields.get(k) == v for k, v in data.items()):
                return msg
    raise AssertionError("the feed ended")


async def bill(client: httpx.AsyncClient, headers: dict[str, str], product: str) -> str:
    body = {"lines": [{"product_id": product, "quantity": 1}]}
    resp = await client.post("/orders", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["order_id"])


async def missed_since(store: EventStore, position: str) -> list[str]:
    """Entry ids (``p/ms-seq``) of the log after ``position``, in (partition, id) order."""
    after = parse_position(position)
    found = []
    for p in range(store.keys.partitions):
        for entry_id, _ in await store.read_raw(p, after.get(p, "0-0"), 10_000):
            found.append(f"{p}/{entry_id}")
    return found


def order_of(msgs: list[Sse]) -> list[str]:
    return sorted(
        (f"{m.data['partition']}/{m.data['entry_id']}" for m in msgs),
        key=lambda s: (int(s.split("/")[0]), parse_stream_id(s.split("/")[1])),
    )


async def test_a_new_order_arrives_on_the_admin_feed(live: str, store: EventStore) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=30) as client:
        admin_headers = await admin(client, store)  # type: ignore[arg-type]
        product = await create_product(client, admin_headers, stock=50)  # type: ignore[arg-type]
        _, headers = await customer(client)  # type: ignore[arg-type]
        async with feed(client, "/events/stream", admin_headers) as messages:
            order_id = await bill(client, headers, product)
            msg = await until(messages, "OrderBilled", order_id=order_id)
        assert msg.data["aggregate"] == f"order:{order_id}"
        assert parse_position(msg.id)[msg.data["partition"]] == msg.data["entry_id"]
        assert set(parse_position(msg.id)) == set(range(store.keys.partitions))


async def test_reconnecting_with_last_event_id_gets_exactly_the_missed_entries(
    live: str, store: EventStore
) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=30) as client:
        admin_headers = await admin(client, store)  # type: ignore[arg-type]
        products = [
            await create_product(client, admin_headers, stock=50)  # type: ignore[arg-type]
            for _ in range(3)
        ]
        _, headers = await customer(client)  # type: ignore[arg-type]
        async with feed(client, "/events/stream", admin_headers) as messages:
            first = await bill(client, headers, products[0])
            seen = await until(messages, "OrderBilled", order_id=first)

        for product in products:  # orders on several partitions, plus a login event
            await bill(client, headers, product)
        await customer(client)  # type: ignore[arg-type]
        missed = await missed_since(store, seen.id)
        assert len(missed) >= 5, missed

        resumed = {"Last-Event-ID": seen.id, **admin_headers}
        async with feed(client, "/events/stream", resumed) as messages:
            got = [await next_message(messages) for _ in missed]
            assert order_of(got) == missed
            last = await bill(client, headers, products[1])
            after = await next_message(messages)
        assert after.data["type"] == "OrderBilled" and after.data["data"]["order_id"] == last, after
        assert all("password_hash" not in m.data["data"] for m in got)


async def test_a_client_that_saw_no_entry_still_resumes_where_its_feed_started(
    live: str, store: EventStore
) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=30) as client:
        admin_headers = await admin(client, store)  # type: ignore[arg-type]
        product = await create_product(client, admin_headers, stock=50)  # type: ignore[arg-type]
        _, headers = await customer(client)  # type: ignore[arg-type]
        async with feed(client, "/events/stream", admin_headers, id_only=True) as messages:
            start = await next_message(messages)
        assert start.data == {}
        assert set(parse_position(start.id)) == set(range(store.keys.partitions))

        order_id = await bill(client, headers, product)
        resumed = {"Last-Event-ID": start.id, **admin_headers}
        async with feed(client, "/events/stream", resumed) as messages:
            first = await next_message(messages)
        assert first.data["type"] == "OrderBilled", first
        assert first.data["data"]["order_id"] == order_id


async def test_an_idle_feed_stays_open_past_the_redis_socket_timeout(
    live: str, store: EventStore
) -> None:
    """Two idle comments are ten empty reads each: the feed outlived redis-py's 5 s socket
    timeout, which a single long blocking read would have hit."""
    async with httpx.AsyncClient(base_url=live, timeout=30) as client:
        admin_headers = await admin(client, store)  # type: ignore[arg-type]
        product = await create_product(client, admin_headers, stock=50)  # type: ignore[arg-type]
        _, headers = await customer(client)  # type: ignore[arg-type]
        path = "/events/stream"
        async with client.stream("GET", path, headers=admin_headers, timeout=None) as resp:
            lines = resp.aiter_lines()
            async with asyncio.timeout(WAIT):
                idle = 0
                while idle < 2:
                    idle += (await anext(lines)) == ": idle"
            order_id = await bill(client, headers, product)
            async with asyncio.timeout(WAIT):
                while True:
                    line = await anext(lines)
                    if line.startswith("data:") and order_id in line:
                        break


async def test_an_order_feed_shows_its_owner_the_order_and_hides_it_from_others(
    live: str, store: EventStore
) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=30) as client:
        admin_headers = await admin(client, store)  # type: ignore[arg-type]
        product = await create_product(client, admin_headers, stock=50)  # type: ignore[arg-type]
        _, owner = await customer(client)  # type: ignore[arg-type]
        _, stranger = await customer(client)  # type: ignore[arg-type]
        order_id = await bill(client, owner, product)
        await bill(client, owner, product)

        resp = await client.get(f"/orders/{order_id}/events", headers=stranger)
        assert resp.status_code == 404, resp.text
        async with feed(client, f"/orders/{order_id}/events", owner) as messages:
            msg = await next_message(messages)
        assert msg.data["type"] == "OrderBilled"
        assert msg.data["data"]["order_id"] == order_id
        assert list(parse_position(msg.id)) == [store.keys.partition_of(f"order:{order_id}")]


async def test_an_archived_order_feed_replays_its_history_from_the_archive(
    live: str, store: EventStore, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=30) as client:
        admin_headers = await admin(client, store)  # type: ignore[arg-type]
        product = await create_product(client, admin_headers, stock=50)  # type: ignore[arg-type]
        _, owner = await customer(client)  # type: ignore[arg-type]
        order_id = await bill(client, owner, product)
        partition = store.keys.partition_of(f"order:{order_id}")

        await archive(store_settings(store), ArchiveOptions(to=str(tmp_path), keep=0))
        assert await store.redis.xlen(store.keys.log(partition)) == 0  # it left Redis

        async with feed(client, f"/orders/{order_id}/events", owner) as messages:
            msg = await next_message(messages)
        assert msg.data["type"] == "OrderBilled"
        assert msg.data["data"]["order_id"] == order_id


async def test_a_checked_out_order_feed_shows_its_owner_the_order(
    live: str, store: EventStore
) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=30) as client:
        admin_headers = await admin(client, store)  # type: ignore[arg-type]
        product = await create_product(client, admin_headers, stock=50)  # type: ignore[arg-type]
        _, owner = await customer(client)  # type: ignore[arg-type]
        put = await client.put(f"/cart/items/{product}", json={"quantity": 2}, headers=owner)
        assert put.status_code == 200, put.text
        placed = await client.post("/checkout", headers=owner)
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]

        async with feed(client, f"/orders/{order_id}/events", owner) as messages:
            msg = await next_message(messages)
        assert msg.data["type"] == "OrderPlaced"
        assert msg.data["data"]["order_id"] == order_id
