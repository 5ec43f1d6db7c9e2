"""``GET /metrics`` through the real app, with real ``streamshop project`` processes: every
series is there after some orders, and projection lag rises while the projector is stopped
and falls to 0 once it has caught up."""

from __future__ import annotations

import uuid

import httpx

from app.metrics import ApiMetrics, count_conflicts
from events.errors import VersionConflict
from events.store import Append, EventStore
from events.types import StockAdjusted
from scripts.servers import free_port
from tests.e2e import admin, create_product, customer
from tests.e2e.test_ops_support import (  # noqa: F401
    VIEWS,
    Ops,
    bill,
    caught_up,
    ops_fixture,
    pg_database_fixture,
    total,
    value,
)
from tests.support.projectors import eventually
from workers.dlq import DeadLetters

ORDERS = 3


async def test_metrics_show_lag_while_the_projector_is_stopped_and_zero_after_it_catches_up(
    ops: Ops,
) -> None:
    admin_headers = await admin(ops.api, ops.store)
    product = await create_product(ops.api, admin_headers, stock=100)
    _, headers = await customer(ops.api)
    projector = await ops.start_projector()
    await bill(ops, headers, product)
    await caught_up(ops)
    await ops.stop_projector(projector)

    for _ in range(ORDERS):
        await bill(ops, headers, product)
    samples = await ops.scrape()
    for view in VIEWS:
        assert total(samples, "streamshop_projection_lag_events", projection=view) >= ORDERS
    await eventually(
        lambda: _positive(ops, "read_models"), 30, "the lag in seconds to show the stopped view"
    )

    port = free_port()
    await ops.start_projector({"METRICS_PORT": str(port)})
    await caught_up(ops)
    async with httpx.AsyncClient() as client:
        worker = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'streamshop_projection_apply_seconds_count{projection="read_models"}' in worker
    assert "process_cpu_seconds_total" in worker
    samples = await ops.scrape()
    for view in VIEWS:
        assert value(samples, "streamshop_projection_lag_seconds", projection=view) == 0
        assert value(samples, "streamshop_projection_events_total", projection=view) >= ORDERS + 1
        assert value(samples, "streamshop_projection_batches_total", projection=view) >= 2
        assert value(samples, "streamshop_projection_batch_seconds_count", projection=view) >= 2
        assert value(samples, "streamshop_projection_batch_seconds_sum", projection=view) > 0
        assert value(samples, "streamshop_dlq_entries", projection=view) == 0
    assert value(
        samples, "streamshop_command_seconds_count", command="billOrder", outcome="ok"
    ) == (ORDERS + 1)
    assert value(samples, "streamshop_command_seconds_count", command="createProduct", outcome="ok")
    assert value(samples, "streamshop_append_conflicts_total") >= 0
    requests = total(samples, "streamshop_http_requests_total", path="/orders", method="POST")
    assert requests >= ORDERS + 1


async def test_metrics_count_dead_letters_and_rejected_ingress_entries(ops: Ops) -> None:
    """Dead letters are sequenced: the first failure of a sequence is its dead letter (the
    head), later entries of the sequence are parked behind it and counted as parked, not as
    dead letters; both per projection. The audit's sequence is the partition, the other
    views' the aggregate."""
    await ops.start_projector()  # its consumer groups name the projections
    keys = ops.settings.redis.keys
    letters = DeadLetters(ops.store.redis, keys)
    fields = {b"type": b"Nope", b"aggregate": b"product:p-1"}
    for n in range(2):  # one partition: one sequence of the audit, a head and a follower
        await letters.put("audit", 0, f"1-{n}", fields, "SinkError: bad", 5)
    await letters.put("read_models", 0, "1-0", fields, "MalformedEvent: bad", 1)
    await letters.put("read_models", 1, "1-1", {b"type": b"Nope"}, "MalformedEvent: bad", 1)
    assert await letters.park("read_models", 0, "1-2", fields) is not None
    await ops.store.redis.xadd(keys.ingest_dlq("produtos"), {"dlq.error": "not JSON"})

    samples = await ops.scrape()
    assert value(samples, "streamshop_dlq_entries", projection="audit") == 2
    assert value(samples, "streamshop_projection_dead_letters_total", projection="audit") == 1
    assert value(samples, "streamshop_projection_parked_followers_total", projection="audit") == 1
    assert value(samples, "streamshop_dlq_entries", projection="read_models") == 3
    assert value(samples, "streamshop_projection_dead_letters_total", projection="read_models") == 2
    assert (
        value(samples, "streamshop_projection_parked_followers_total", projection="read_models")
        == 1
    )
    assert value(samples, "streamshop_dlq_entries", projection="warehouse") == 0
    assert value(samples, "streamshop_projection_dead_letters_total", projection="warehouse") == 0
    assert value(samples, "streamshop_ingest_rejected_total", source="produtos") == 1
    assert "ingest:produtos" not in {
        lab["projection"] for lab, _ in samples.get("streamshop_dlq_entries", [])
    }


async def test_each_version_conflict_of_an_append_is_counted(store: EventStore) -> None:
    metrics = ApiMetrics()
    count_conflicts(store, metrics)
    adjusted = StockAdjusted(product_id=str(uuid.uuid4()), delta=1, reason="count")
    stale = Append(events=[adjusted], expect={adjusted.aggregate(): 7})
    for _ in range(2):
        try:
            await store.append(stale)
        except VersionConflict:
            pass
        else:
            raise AssertionError("an append expecting version 7 of a new aggregate succeeded")
    assert metrics.registry.get_sample_value("streamshop_append_conflicts_total") == 2


async def _positive(ops: Ops, view: str) -> bool:
    return await ops.lag_seconds(view) > 0
