"""The gateway as an operator runs it: a real ``streamshop ingest`` process that stops cleanly
on SIGTERM, and a gateway that rides out Redis going away without dead-lettering anything."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from events.store import EventStore
from scripts.servers import free_port
from tests.conftest import REDIS_URL
from tests.integration.test_ingest import Producer, drained, eventually, product
from workers.ingest import IngestGateway

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def producer(redis_client: aioredis.Redis, store: EventStore) -> Producer:
    return Producer(redis_client, store)


async def test_streamshop_ingest_serves_discovered_streams_and_exits_0_on_sigterm(
    store: EventStore, producer: Producer, prefix: str
) -> None:
    data = product()
    await producer.event("ProductCreated", data, source="erp")
    await producer.raw({"id": str(uuid.uuid4()), "type": "Nope"}, source="erp")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "ingest",
        "--discover-interval",
        "0.2",
        "--block-ms",
        "100",
        cwd=ROOT,
        env={
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "STREAM_PREFIX": prefix,
            "STREAM_PARTITIONS": str(store.keys.partitions),
            "LOG_FORMAT": "json",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # A child process on a loaded machine can take many seconds to import and start:
        # this bound is for the start-up, not a measure of anything.
        await producer.wait("erp", within=90)
        later = product()
        await producer.event("ProductCreated", later, source="erp")
        await producer.wait("erp")
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output.decode()
    for created in (data, later):
        assert (await store.state(f"product:{created['product_id']}"))["v"] == "1"
    assert len(await producer.dead_letters("erp")) == 1
    lines = [msgspec.json.decode(line) for line in output.splitlines() if line.startswith(b"{")]
    events = [line["event"] for line in lines]
    assert "gateway_stopped" in events
    assert events.count("ingest_appended") == 2


class Proxy:
    """A TCP proxy in front of the real Redis that can be cut and restored, so the
    gateway sees a Redis that goes away (connections reset, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._pipes):
            writer.close()
        self._pipes.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._pipes.update({writer, up_writer})

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._pipes.difference_update({writer, up_writer})


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    target = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = Proxy(target)
    await proxy.start()
    yield proxy
    await proxy.cut()


async def test_a_redis_outage_is_waited_out_not_dead_lettered(
    store: EventStore, producer: Producer, proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    # No client-side retries: the gateway's own backoff is what is under test.
    via_proxy = aioredis.Redis(
        host="127.0.0.1", port=proxy.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    gw = IngestGateway(
        via_proxy,
        EventStore(via_proxy, store.keys),
        store.keys,
        ["catalog"],
        discover=False,
        block_ms=100,
        backoff_max=0.2,
        consumer="outage",
    )
    task = asyncio.create_task(gw.run())
    try:
        first = product()
        await producer.event("ProductCreated", first)
        await producer.wait()

        await proxy.cut()
        during = [product() for _ in range(5)]
        for data in during:
            await producer.event("ProductCreated", data)
        await eventually(lambda: asyncio.sleep(0, gw.stats.transient_errors >= 3), within=30)
        assert not task.done()
        await proxy.start()

        await drained(redis_client, producer.stream())
    finally:
        gw.stop()
        await asyncio.wait_for(task, timeout=10)
        await via_proxy.aclose()
    for data in [first, *during]:
        assert (await store.state(f"product:{data['product_id']}"))["v"] == "1"
    assert await producer.dead_letters() == []
    assert await store.count() == 6
