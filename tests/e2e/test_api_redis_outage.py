"""A command while Redis is out: 503 problem+json with ``Retry-After``, not a 500, and the
retry with the same ``Idempotency-Key`` takes effect once Redis is back. The API runs as a
real process on Redis through a TCP proxy that the test takes down and brings back."""

from __future__ import annotations

import httpx

from events.store import EventStore
from tests.conftest import REDIS_URL
from tests.e2e import admin, assert_problem, create_product, customer, events_of_type
from tests.e2e.test_ops_support import live_api_async
from tests.support.tcp_proxy import TcpProxy


async def test_an_order_while_redis_is_out_is_503_and_its_retry_bills_once(
    prefix: str, store: EventStore
) -> None:
    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.up()
    env = {"REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}
    try:
        async with (
            live_api_async(prefix, store.keys.partitions, **env) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as api,
        ):
            boss = await admin(api, store)
            mug = await create_product(api, boss, price=1000, stock=5)
            _, headers = await customer(api)
            order = {"lines": [{"product_id": mug, "quantity": 2}]}
            keyed = {**headers, "Idempotency-Key": "o-1"}

            await proxy.down()
            out = await api.post("/orders", json=order, headers=keyed)
            body = assert_problem(out, 503, "unavailable")
            assert out.headers["Retry-After"] == "1"
            assert "Idempotency-Key" in body["detail"]

            await proxy.up()
            billed = await api.post("/orders", json=order, headers=keyed)
            assert billed.status_code == 201, billed.text
            again = await api.post("/orders", json=order, headers=keyed)
            assert again.content == billed.content
            assert len(await events_of_type(store, "OrderBilled")) == 1
    finally:
        await proxy.down()
