"""A projector on a Redis Cluster rides out a primary's outage.

With no replica, a primary down for longer than ``cluster-node-timeout`` takes the whole
cluster to ``cluster_state:fail``: the surviving nodes refuse every command with
``CLUSTERDOWN`` (``ClusterDownError``) until it is back. The runner took that for a bug, not
an outage, and the projector process exited (the fault run's supervisor restarted it).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from events.codec import RecordedEvent
from events.connection import connect
from events.keys import Keys
from events.store import Append, EventStore
from events.types import ProductCreated
from tests.support.cluster import RedisClusterNodes, start_cluster
from tests.support.memory_projection import RecordingProjection
from workers.runner import ProjectorRunner


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A cluster of its own: this test kills one of its primaries."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    cluster = start_cluster(root=tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


def cluster_state(port: int) -> str:
    with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
        return str(client.cluster("info")["cluster_state"])


async def until(predicate: object, what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.1)


async def add_products(store: EventStore, n: int) -> None:
    for _ in range(n):
        sku = uuid.uuid4().hex[:8]
        product = ProductCreated(product_id=uuid.uuid4().hex, sku=sku, name="mug", price=100)
        await store.append(Append(events=[product]))


class HeldProjection(RecordingProjection):
    """Records what it applies; while ``held`` is clear, an apply waits for it, so that a
    batch is in hand, and its acknowledgement still to come, when the cluster goes down."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.held = asyncio.Event()
        self.held.set()

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        await self.held.wait()
        await super().apply(partition, events)


async def test_a_projector_waits_out_a_cluster_down_and_goes_on(nodes: RedisClusterNodes) -> None:
    client = connect(nodes.url, cluster=True)
    store = EventStore(client, Keys(prefix=f"sstest:{uuid.uuid4().hex[:8]}", partitions=4))
    await store.load_functions()
    await add_products(store, 8)
    projection = HeldProjection("recording")
    runner = ProjectorRunner(
        client,
        store.keys,
        [projection],
        consumer=f"c-{uuid.uuid4().hex[:6]}",
        block_ms=100,
        lease_ms=3000,
        backoff_base_ms=50,
        backoff_max_ms=500,
    )
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: len(projection.applied) == 8, "the first events were not applied")
        projection.held.clear()
        await add_products(store, 8)  # read by the workers, applied once the cluster is down
        await asyncio.sleep(1.0)
        nodes.procs[1].kill()
        nodes.procs[1].wait()
        await until(lambda: cluster_state(nodes.ports[0]) == "fail", "the cluster stayed up")
        projection.held.set()  # the batches' acknowledgements meet CLUSTERDOWN
        await asyncio.sleep(2.0)
        assert not task.done(), task.exception()
        nodes.start_node(1)
        await until(nodes.cluster_ok, "the cluster did not come back")
        await until(
            lambda: len(projection.applied) == 16 or task.done(),
            "the events appended before the outage were not all applied",
            within=60,
        )
        assert not task.done(), task.exception()
        assert len(projection.applied) == 16
    finally:
        runner.stop()
        await asyncio.wait_for(task, timeout=30)
        await client.aclose()
