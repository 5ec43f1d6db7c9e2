"""The ingress gateway against the real Redis: valid events land, duplicates vanish,
garbage is dead-lettered with its reason, and the gateway keeps going."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from events.store import EventStore
from tests.support.cluster import single_and_cluster
from workers.ingest import IngestGateway
from workers.legacy_feed import product_id_for

SOURCE = "catalog"


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (or fail after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


async def drained(
    redis: aioredis.Redis, stream: str, group: str = "gateway", within: float = 10.0
) -> None:
    """Wait until the group has read and acknowledged every entry of ``stream``."""

    async def done() -> bool:
        if not await redis.exists(stream):
            return False
        groups = await redis.xinfo_groups(stream)
        info = next((g for g in groups if g["name"] == group.encode()), None)
        if info is None:
            return False
        length = await redis.xlen(stream)
        return info["pending"] == 0 and info["entries-read"] == length

    await eventually(done, within=within)


class Producer:
    """A test stand-in for an external producer: plain XADDs, as a Java client would send."""

    def __init__(self, redis: aioredis.Redis, store: EventStore) -> None:
        self.redis = redis
        self.keys = store.keys

    def stream(self, source: str = SOURCE) -> str:
        return self.keys.ingest(source)

    async def raw(self, fields: dict[str, str | bytes], source: str = SOURCE) -> str:
        entry_id = await self.redis.xadd(self.stream(source), fields)  # type: ignore[arg-type]
        return entry_id.decode()

    async def event(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        source: str = SOURCE,
        **extra: str,
    ) -> str:
        event_id = event_id or str(uuid.uuid4())
        await self.raw(
            {
                "id": event_id,
                "type": type_,
                "schema": "1",
                "data": msgspec.json.encode(data),
                **extra,
            },
            source,
        )
        return event_id

    async def legacy(self, acao: str, **produto: Any) -> str:
        payload = msgspec.json.encode({"acao": acao, "produto": produto})
        return await self.raw({"payload": payload}, "produtos")

    async def wait(self, source: str = SOURCE, within: float = 10.0) -> None:
        await drained(self.redis, self.stream(source), within=within)

    async def dead_letters(self, source: str = SOURCE) -> list[dict[str, Any]]:
        """Each dead letter's ``dlq.*`` fields (without the prefix), and under ``original``
        the entry's own fields, as bytes."""
        rows = await self.redis.xrange(self.keys.ingest_dlq(source))
        letters = []
        for _, fields in rows:
            letter: dict[str, Any] = {
                k.decode().removeprefix("dlq."): v.decode()
                for k, v in fields.items()
                if k.startswith(b"dlq.")
            }
            letter["original"] = {k: v for k, v in fields.items() if not k.startswith(b"dlq.")}
            letters.append(letter)
        return letters


@pytest.fixture
async def gateway(redis_client: aioredis.Redis, store: EventStore) -> AsyncIterator[IngestGateway]:
    gw = IngestGateway(
        redis_client,
        store,
        store.keys,
        [SOURCE, "produtos"],
        discover_interval=0.2,
        block_ms=100,
        consumer="test-gateway",
    )
    task = asyncio.create_task(gw.run())
    yield gw
    gw.stop()
    await asyncio.wait_for(task, timeout=10)


@pytest.fixture
def producer(redis_client: aioredis.Redis, store: EventStore) -> Producer:
    return Producer(redis_client, store)


def product(**overrides: Any) -> dict[str, Any]:
    data = {
        "type": "ProductCreated",
        "product_id": str(uuid.uuid4()),
        "sku": f"SKU-{uuid.uuid4().hex[:10]}",
        "name": 'Caneca "Java" ☕',
        "price": 3990,
        "stock": 25,
    }
    data.update(overrides)
    return data


async def events_with_id(store: EventStore, event_id: str) -> list[Any]:
    return [e async for e in store.read_all() if e.id == event_id]


# -- valid events ------------------------------------------------------------------------


async def test_a_valid_product_created_reaches_the_write_side_with_the_producers_id(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    data = product()
    event_id = await producer.event("ProductCreated", data, actor="erp-java")
    await producer.wait()

    state = await store.state(f"product:{data['product_id']}")
    assert state["v"] == "1"
    assert state["price"] == "3990"
    assert state["stock"] == "25"
    assert await store.owner_of("sku", data["sku"]) == f"product:{data['product_id']}"
    [recorded] = await events_with_id(store, event_id)
    assert recorded.source == f"ingest:{SOURCE}"
    assert recorded.actor == "erp-java"
    assert recorded.event.name == 'Caneca "Java" ☕'
    assert await producer.dead_letters() == []


async def test_the_same_producer_event_id_published_twice_creates_one_event(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    data = product()
    event_id = str(uuid.uuid4())
    await producer.event("ProductCreated", data, event_id=event_id)
    await producer.event("ProductCreated", data, event_id=event_id)
    await producer.wait()

    assert len(await events_with_id(store, event_id)) == 1
    assert (await store.state(f"product:{data['product_id']}"))["v"] == "1"
    assert await producer.dead_letters() == []
    assert gateway.stats.duplicates == 1


async def test_a_duplicate_stock_adjustment_is_applied_once(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    data = product(stock=10)
    await producer.event("ProductCreated", data)
    adjust = {"type": "StockAdjusted", "product_id": data["product_id"], "delta": 5}
    event_id = await producer.event("StockAdjusted", adjust)
    await producer.event("StockAdjusted", adjust, event_id=event_id)
    await producer.wait()

    assert (await store.state(f"product:{data['product_id']}"))["stock"] == "15"


async def test_updates_and_deletes_follow_a_create(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    data = product()
    pid = data["product_id"]
    await producer.event("ProductCreated", data)
    await producer.event("ProductUpdated", {"product_id": pid, "price": 4590, "name": "Caneca"})
    await producer.wait()
    state = await store.state(f"product:{pid}")
    assert (state["price"], state["name"], state["v"]) == ("4590", "Caneca", "2")

    await producer.event("ProductDeleted", {"product_id": pid})
    await producer.wait()
    assert "deleted" in await store.state(f"product:{pid}")
    assert await producer.dead_letters() == []


async def test_data_without_its_type_tag_is_accepted(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    data = product()
    del data["type"]
    await producer.event("ProductCreated", data)
    await producer.wait()
    assert (await store.state(f"product:{data['product_id']}"))["v"] == "1"


# -- garbage -----------------------------------------------------------------------------


def _valid_fields(**data: Any) -> dict[str, str | bytes]:
    return {
        "id": str(uuid.uuid4()),
        "type": "ProductCreated",
        "schema": "1",
        "data": msgspec.json.encode(product(**data)),
    }


def _without(fields: dict[str, str | bytes], name: str) -> dict[str, str | bytes]:
    return {k: v for k, v in fields.items() if k != name}


GARBAGE: list[tuple[str, dict[str, str | bytes], str, str]] = [
    # (case, entry fields, field named in the DLQ record, text the reason must contain)
    ("not json", {**_valid_fields(), "data": b"{not json"}, "data", "not JSON"),
    ("data not an object", {**_valid_fields(), "data": b"[1, 2]"}, "data", "object"),
    ("price as a string", _valid_fields(price="39.90"), "data.price", "$.price"),
    ("negative stock", _valid_fields(stock=-1), "data.stock", "$.stock"),
    ("bad currency", _valid_fields(currency="reais"), "data.currency", "$.currency"),
    ("unknown type", {**_valid_fields(), "type": "ProductTeleported"}, "type", "unknown"),
    ("type not for producers", {**_valid_fields(), "type": "OrderBilled"}, "type", "may not"),
    ("unknown schema", {**_valid_fields(), "schema": "7"}, "schema", "not known"),
    ("schema not a number", {**_valid_fields(), "schema": "v1"}, "schema", "not known"),
    ("missing id", _without(_valid_fields(), "id"), "id", "missing"),
    ("missing data", _without(_valid_fields(), "data"), "data", "missing"),
    ("id not a uuid", {**_valid_fields(), "id": "42"}, "id", "UUID"),
    ("unknown entry field", {**_valid_fields(), "priority": "high"}, "priority", "unknown"),
    ("unknown data field", _valid_fields(prcie=1), "data.prcie", "prcie"),
    ("tag disagrees", _valid_fields(type="ProductDeleted"), "data.type", "does not match"),
    ("product id not a uuid", _valid_fields(product_id="p1"), "data.product_id", "UUID"),
    ("bad at", {**_valid_fields(), "at": "yesterday"}, "at", "RFC 3339"),
    ("oversized", _valid_fields(description="x" * 70_000), "entry", "limit"),
    ("not utf-8", {**_valid_fields(), "actor": b"\xff\xfe"}, "actor", "UTF-8"),
]


def _missing_sku() -> dict[str, str | bytes]:
    fields = _valid_fields()
    data = msgspec.json.decode(fields["data"])
    del data["sku"]
    return {**fields, "data": msgspec.json.encode(data)}


GARBAGE.append(("missing data field", _missing_sku(), "data.sku", "sku"))


async def test_garbage_is_dead_lettered_with_its_reason_and_the_gateway_keeps_going(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    entry_ids = [await producer.raw(fields) for _, fields, _, _ in GARBAGE]
    good = product()
    await producer.event("ProductCreated", good)
    await producer.wait()

    letters = await producer.dead_letters()
    assert [d["entry_id"] for d in letters] == entry_ids
    for (case, fields, field, text), letter in zip(GARBAGE, letters, strict=True):
        assert letter["kind"] == "invalid", case
        assert letter["field"] == field, (case, letter["error"])
        assert text in letter["error"], (case, letter["error"])
        assert letter["source"] == SOURCE
        assert set(letter["original"]) == {k.encode() for k in fields}, case
        assert letter["truncated"] == ("1" if case == "oversized" else "0"), case
    assert (await store.state(f"product:{good['product_id']}"))["v"] == "1"
    assert await store.count() == 1
    assert not gateway.stopping


@single_and_cluster
async def test_the_dead_letter_keeps_the_original_fields(
    gateway: IngestGateway, producer: Producer
) -> None:
    fields = _valid_fields(price="39.90")
    await producer.raw(fields)
    await producer.wait()
    [letter] = await producer.dead_letters()
    assert letter["original"] == {
        k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()
    }
    assert letter["event_id"] == fields["id"]
    assert letter["stream"] == producer.stream()


@single_and_cluster
async def test_bytes_that_are_not_utf8_are_kept_as_they_were(
    gateway: IngestGateway, producer: Producer
) -> None:
    fields = {**_valid_fields(), "actor": b"\xff\xfe"}
    await producer.raw(fields)
    await producer.wait()
    [letter] = await producer.dead_letters()
    assert letter["original"][b"actor"] == b"\xff\xfe"


async def test_outcomes_are_counted_per_source(
    gateway: IngestGateway, producer: Producer, redis_client: aioredis.Redis
) -> None:
    data = product()
    event_id = await producer.event("ProductCreated", data)
    await producer.event("ProductCreated", data, event_id=event_id)
    await producer.raw({**_valid_fields(), "type": "Nope"})
    await producer.wait()
    counters = await redis_client.hgetall(gateway.metrics_key(SOURCE))
    assert counters == {b"appended": b"1", b"duplicates": b"1", b"dead_letters": b"1"}


async def test_an_update_of_an_unknown_product_is_rejected_by_the_write_side(
    gateway: IngestGateway, producer: Producer
) -> None:
    await producer.event("ProductUpdated", {"product_id": str(uuid.uuid4()), "price": 1})
    await producer.wait()
    [letter] = await producer.dead_letters()
    assert letter["kind"] == "rejected"
    assert letter["field"] == "data.product_id"
    assert "does not exist" in letter["error"]


async def test_a_duplicate_sku_is_rejected_naming_the_sku(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    first = product()
    second = product(sku=first["sku"])
    await producer.event("ProductCreated", first)
    await producer.event("ProductCreated", second)
    await producer.wait()
    [letter] = await producer.dead_letters()
    assert (letter["kind"], letter["field"]) == ("rejected", "data.sku")
    assert await store.state(f"product:{second['product_id']}") == {}


async def test_removing_more_stock_than_there_is_is_rejected(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    data = product(stock=2)
    await producer.event("ProductCreated", data)
    await producer.event(
        "StockAdjusted", {"product_id": data["product_id"], "delta": -3, "reason": "breakage"}
    )
    await producer.wait()
    [letter] = await producer.dead_letters()
    assert letter["kind"] == "rejected"
    assert (await store.state(f"product:{data['product_id']}"))["stock"] == "2"


# -- streams -----------------------------------------------------------------------------


async def test_a_new_ingress_stream_is_discovered(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    data = product()
    await producer.event("ProductCreated", data, source="erp-norte")
    await producer.wait("erp-norte")
    assert (await store.state(f"product:{data['product_id']}"))["v"] == "1"
    assert "erp-norte" in gateway.sources


async def test_entries_published_before_the_gateway_starts_are_processed(
    redis_client: aioredis.Redis, store: EventStore, producer: Producer
) -> None:
    data = product()
    await producer.event("ProductCreated", data)
    gw = IngestGateway(
        redis_client, store, store.keys, [SOURCE], discover=False, block_ms=100, consumer="late"
    )
    task = asyncio.create_task(gw.run())
    try:
        await producer.wait()
    finally:
        gw.stop()
        await asyncio.wait_for(task, timeout=10)
    assert (await store.state(f"product:{data['product_id']}"))["v"] == "1"


async def test_entries_left_pending_by_a_dead_gateway_are_taken_over(
    redis_client: aioredis.Redis, store: EventStore, producer: Producer
) -> None:
    stream = producer.stream()
    await redis_client.xgroup_create(stream, "gateway", id="0", mkstream=True)
    data = product()
    await producer.event("ProductCreated", data)
    # another gateway read it and died before acknowledging
    await redis_client.xreadgroup("gateway", "dead-gateway", {stream: ">"}, count=10)
    gw = IngestGateway(
        redis_client,
        store,
        store.keys,
        [SOURCE],
        discover=False,
        discover_interval=0.1,
        block_ms=100,
        claim_idle_ms=50,
        consumer="heir",
    )
    task = asyncio.create_task(gw.run())
    try:
        await producer.wait()
    finally:
        gw.stop()
        await asyncio.wait_for(task, timeout=10)
    assert (await store.state(f"product:{data['product_id']}"))["v"] == "1"


async def test_entries_whose_read_reply_was_lost_are_handled_at_once_not_after_claim_idle(
    redis_client: aioredis.Redis, store: EventStore, producer: Producer
) -> None:
    """Redis delivered the entries (they are pending for this consumer) but the reply was
    lost (the node was killed): the gateway re-reads its own pending entries on its next
    round; ``claim_idle_ms`` is an hour here, so only that can get them through."""
    data = product()
    await producer.event("ProductCreated", data)
    gw = IngestGateway(
        redis_client,
        store,
        store.keys,
        [SOURCE],
        discover=False,
        block_ms=100,
        claim_idle_ms=3_600_000,
        consumer="unlucky",
    )
    real_read = gw._read
    lost: list[int] = []

    async def read_then_lose_the_reply(streams: dict[str, str], block: bool) -> list[Any]:
        reply = await real_read(streams, block)
        if reply and not lost and ">" in streams.values():
            lost.append(1)
            raise ConnectionError("the reply was lost")
        return reply

    gw._read = read_then_lose_the_reply  # type: ignore[method-assign]
    task = asyncio.create_task(gw.run())
    try:
        await producer.wait(within=5)
    finally:
        gw.stop()
        await asyncio.wait_for(task, timeout=10)
    assert lost, "the read never delivered the entry"
    assert (await store.state(f"product:{data['product_id']}"))["v"] == "1"


# -- the legacy feed ---------------------------------------------------------------------


async def test_a_legacy_product_is_created_updated_and_removed_under_one_product_id(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    legacy_id = int(uuid.uuid4().int % 10**9) + 1
    pid = product_id_for(legacy_id)
    aggregate = f"product:{pid}"
    await producer.legacy("criado", id=legacy_id, nome="Café 500g", preco=29.9, estoque=12)
    await producer.wait("produtos")
    state = await store.state(aggregate)
    assert (state["name"], state["price"], state["stock"]) == ("Café 500g", "2990", "12")
    assert await store.owner_of("legacy_product", str(legacy_id)) == aggregate

    await producer.legacy("atualizado", id=legacy_id, nome="Café 500g", preco=31.5, estoque=15)
    await producer.wait("produtos")
    state = await store.state(aggregate)
    assert (state["price"], state["stock"]) == ("3150", "15")

    await producer.legacy("removido", id=legacy_id)
    await producer.wait("produtos")
    assert "deleted" in await store.state(aggregate)
    assert await producer.dead_letters("produtos") == []


async def test_a_resent_legacy_snapshot_changes_no_stock(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    legacy_id = int(uuid.uuid4().int % 10**9) + 1
    for _ in range(2):
        await producer.legacy("criado", id=legacy_id, nome="Chá", preco=10, estoque=3)
    await producer.wait("produtos")
    state = await store.state(f"product:{product_id_for(legacy_id)}")
    assert (state["stock"], state["price"]) == ("3", "1000")
    assert await producer.dead_letters("produtos") == []


async def test_a_resent_atualizado_snapshot_with_a_description_appends_nothing(
    gateway: IngestGateway, producer: Producer, store: EventStore
) -> None:
    legacy_id = int(uuid.uuid4().int % 10**9) + 1
    aggregate = f"product:{product_id_for(legacy_id)}"
    snapshot = {"id": legacy_id, "nome": "Chá", "descricao": "Verde, 20 sachês", "preco": 10}
    await producer.legacy("criado", **snapshot, estoque=3)
    await producer.wait("produtos")
    for _ in range(3):
        await producer.legacy("atualizado", **snapshot, estoque=3)
    await producer.wait("produtos")

    types = [e.type async for e in store.read_all() if e.event.aggregate() == aggregate]
    assert types == ["ProductCreated"]
    assert gateway.stats.unchanged == 3
    assert await producer.dead_letters("produtos") == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{nope", "payload"),
        (
            b'{"acao": "criado", "produto": {"id": "7", "nome": "x", "preco": 1}}',
            "payload.produto.id",
        ),
        (b'{"acao": "vendido", "produto": {"id": 7}}', "payload.acao"),
        (
            b'{"acao": "criado", "produto": {"id": 7, "nome": "x", "preco": 1.999}}',
            "payload.produto.preco",
        ),
        (b'{"acao": "criado", "produto": {"id": 7, "nome": "x"}}', "payload.produto.preco"),
    ],
)
async def test_bad_legacy_messages_are_dead_lettered_naming_the_field(
    gateway: IngestGateway, producer: Producer, payload: bytes, field: str
) -> None:
    await producer.raw({"payload": payload}, "produtos")
    await producer.wait("produtos")
    [letter] = await producer.dead_letters("produtos")
    assert letter["field"] == field, letter["error"]
