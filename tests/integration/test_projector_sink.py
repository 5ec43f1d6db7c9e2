"""A sink that is down is waited out: nothing acknowledged, nothing lost, no dead letters."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from events.store import EventStore
from tests.support.cluster import single_and_cluster
from tests.support.projectors import (
    Cli,
    SumView,
    append_adjustments,
    eventually,
    fold_log,
    group_state,
    lease_owners,
)
from tests.support.tcp_proxy import TcpProxy

pytest_plugins = ["tests.support.fixtures"]
pytestmark = single_and_cluster


async def test_projector_waits_out_a_sink_outage_then_catches_up(
    cli: Cli,
    store: EventStore,
    redis_client: aioredis.Redis,
    view: SumView,
    sum_table: str,
    pg_dsn: str,
) -> None:
    dsn = urlsplit(pg_dsn)
    proxy = TcpProxy(dsn.hostname or "127.0.0.1", dsn.port or 5432)
    await proxy.up()
    via_proxy = urlunsplit(dsn._replace(netloc=f"{dsn.username}@127.0.0.1:{proxy.port}"))
    products = [str(uuid.uuid4()) for _ in range(20)]
    parts = store.keys.partitions
    try:
        projector = cli.project(
            "p",
            "--lease-ms",
            "1500",
            "--block-ms",
            "300",
            "--batch",
            "50",
            "--max-attempts",
            "2",
            "--backoff-max-ms",
            "300",
            env={"DATABASE_URL": via_proxy},
        )

        async def applied(n: int) -> bool:
            state = await group_state(redis_client, store.keys.prefix, parts, sum_table)
            return await view.applied() == n and state["pending"] == 0 and state["lag"] == 0

        await projector.started()
        await append_adjustments(store, products, 400)
        await eventually(lambda: applied(400), what="the first 400 events")

        await proxy.down()
        await append_adjustments(store, products, 400)

        async def retried() -> bool:
            return len(projector.logs("sink_unavailable")) >= 6

        await eventually(retried, what="the projector to retry the unavailable sink")
        state = await group_state(redis_client, store.keys.prefix, parts, sum_table)
        assert state["entries_read"] - state["pending"] == 400, "nothing acked while down"
        assert state["pending"] > 0
        assert await view.applied() == 400
        assert set(
            (await lease_owners(redis_client, store.keys.prefix, parts, sum_table)).values()
        ) == {"p"}
        assert await redis_client.xlen(store.keys.dlq(sum_table)) == 0
        lag = [json.loads(line) for line in cli.run("lag", "--json").stdout.splitlines()]
        assert {(row["projection"], row["partition"], row["owner"]) for row in lag} == {
            (sum_table, p, "p") for p in range(parts)
        }
        assert sum(row["pending"] for row in lag) == state["pending"]
        assert all(row["acked"] <= row["delivered"] for row in lag)

        await proxy.up()
        await eventually(lambda: applied(800), what="the projection to catch up")
        assert await view.sums() == await fold_log(store)
        assert await view.order_violations() == []
        assert await redis_client.xlen(store.keys.dlq(sum_table)) == 0
        assert projector.logs("sink_recovered")
        assert projector.proc.poll() is None
    finally:
        await proxy.down()
