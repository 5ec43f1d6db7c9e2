"""Readers that used to look at Redis only, over a log whose old part is archived: an
aggregate's history for the order feed, and the check that a view's checkpoints name
entries of this log (``log_holds``)."""

from __future__ import annotations

from pathlib import Path

from app.controllers.feed import order_history
from events.identity import log_holds
from events.store import EventStore
from tests.integration.test_archive import fill, redis_log, store_settings
from workers.archive import ArchiveOptions, archive

PRODUCT = "product:0001"


async def test_an_aggregate_history_half_archived_reads_whole_and_once(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 256)  # 4 entries of each of 64 products, spread over the partitions
    partition = store.keys.partition_of(PRODUCT)
    before = [
        (entry_id, fields)
        for p, entry_id, fields in await redis_log(store)
        if p == partition and fields[b"aggregate"] == PRODUCT.encode()
    ]
    assert len(before) == 4
    live = await store.redis.xrange(store.keys.log(partition))
    # Keep in Redis exactly the entries from the product's third one on.
    keep = len(live) - [e.decode() for e, _ in live].index(before[2][0])

    await archive(store_settings(store), ArchiveOptions(to=str(tmp_path), keep=keep))

    remaining = [e.decode() for e, _ in await store.redis.xrange(store.keys.log(partition))]
    assert before[0][0] not in remaining and before[2][0] in remaining
    assert await order_history(store, PRODUCT, partition) == before


async def test_a_checkpoint_on_an_archived_entry_is_held_by_this_log(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 64)
    first = {
        p: (await store.redis.xrange(store.keys.log(p), count=1))[0][0].decode() for p in (0, 1)
    }
    assert await log_holds(store.redis, store.keys, first)

    await archive(store_settings(store), ArchiveOptions(to=str(tmp_path), keep=1))

    assert not await store.redis.xrange(store.keys.log(0), min=first[0], max=first[0])
    assert await log_holds(store.redis, store.keys, first)
    ms, seq = first[1].split("-")
    absent = f"{ms}-{int(seq) + 1_000_000}"  # never appended
    assert not await log_holds(store.redis, store.keys, {**first, 1: absent})
    assert not await log_holds(store.redis, store.keys, {0: "99999999999999-0"})
