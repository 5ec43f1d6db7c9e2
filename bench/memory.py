"""Redis memory per event of the log: MEMORY USAGE of the partition streams ÷ events."""

from __future__ import annotations

import uuid

from bench.append import sample_order
from events.connection import connect
from events.keys import Keys
from events.store import Append, EventStore


async def run(redis_url: str, events: int = 20000, batch: int = 200) -> dict[str, object]:
    client = connect(redis_url)
    prefix = f"ssbench:{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix=prefix, partitions=8)
    store = EventStore(client, keys)
    await store.load_functions()
    try:
        for i in range(0, events, batch):
            chunk = [sample_order() for _ in range(min(batch, events - i))]
            await store.append(Append(events=chunk))
        log_bytes = 0
        for key in keys.logs():
            log_bytes += int(await client.memory_usage(key, samples=0) or 0)
        state_bytes = 0
        async for key in client.scan_iter(match=f"{prefix}:state:*", count=1000):
            state_bytes += int(await client.memory_usage(key) or 0)
        config = await client.config_get("stream-node-max-*")
    finally:
        cleanup = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(cleanup), 500):
            await client.delete(*cleanup[i : i + 500])
        await client.aclose()
    per_event = log_bytes / events
    return {
        "log_bytes_per_event": round(per_event, 1),
        "state_bytes_per_order": round(state_bytes / events, 1),
        "limit": "target ≤ 400 bytes per typical OrderBilled (2 lines)",
        "ratio": round(per_event / 400, 3),
        "params": {
            "events": events,
            "event": "OrderBilled with 2 lines",
            "stream_node_config": {
                k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                for k, v in config.items()
            },
        },
    }
