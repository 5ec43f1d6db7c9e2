"""The decision state is a projection too: ``streamshop verify state`` names a hash that is
not the fold of the log, and ``streamshop rebuild state`` rewrites it (also to backfill a
field that a state gained), while appends go on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from app.commands import execute
from app.commands.accounts import SignUp
from app.commands.billing import BillLine, BillOrder
from app.commands.catalog import AdjustStock, CreateProduct, UpdateProduct
from app.commands.errors import InsufficientStock
from events.states import encode_state
from events.store import EventStore, Metadata
from tests.conftest import target_of
from tests.support.cluster import single_and_cluster
from workers.state import put_state, read_hashes, rebuild_state, verify_state

ROOT = Path(__file__).resolve().parents[2]
pytestmark = single_and_cluster

META = Metadata(actor="test")


def streamshop(store: EventStore, *args: str) -> subprocess.CompletedProcess[str]:
    """``streamshop <args>`` as an operator runs it, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env={
            **os.environ,
            **target_of(store.redis).env(),
            "STREAM_PREFIX": store.keys.prefix,
            "STREAM_PARTITIONS": str(store.keys.partitions),
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


async def shop(store: EventStore) -> dict[str, str]:
    """An account, two products and an order, through the command path."""
    account = await execute(
        store,
        SignUp(email=f"{uuid.uuid4().hex[:8]}@x.co", name="Ana", password_hash="$argon2id$h"),
        META,
    )
    ids = {"account": msgspec.json.decode(account.result)["account_id"]}
    for name, stock in (("mug", 5), ("tee", 2)):
        created = await execute(
            store,
            CreateProduct(sku=f"SKU-{uuid.uuid4().hex[:8]}", name=name, price=1000, stock=stock),
            META,
        )
        ids[name] = msgspec.json.decode(created.result)["product_id"]
    await execute(store, UpdateProduct(product_id=ids["mug"], description="Azul"), META)
    await execute(store, AdjustStock(product_id=ids["tee"], delta=3, reason="entrega"), META)
    billed = await execute(
        store,
        BillOrder(
            account_id=ids["account"],
            lines=[BillLine(product_id=ids["mug"], quantity=2)],
        ),
        META,
    )
    ids["order"] = msgspec.json.decode(billed.result)["receipt"]["order_id"]
    return ids


async def test_the_state_the_commands_wrote_is_the_fold_of_the_log(store: EventStore) -> None:
    await shop(store)
    result = await asyncio.to_thread(streamshop, store, "verify", "state")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("state: OK: ")


async def test_verify_names_a_tampered_field_and_rebuild_restores_it(
    store: EventStore, redis_client: aioredis.Redis
) -> None:
    ids = await shop(store)
    mug = f"product:{ids['mug']}"
    key = store.keys.state(mug)
    await redis_client.hset(key, "stock", "99")

    bad = await asyncio.to_thread(streamshop, store, "verify", "state", "--show", "5")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"{mug}: differs (stock: state='99' log='3')" in bad.stdout

    rebuilt = await asyncio.to_thread(streamshop, store, "rebuild", "state", "--no-progress")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "1 of 4 aggregates rewritten" in rebuilt.stdout
    assert (await store.state(mug))["stock"] == "3"
    again = await asyncio.to_thread(streamshop, store, "verify", "state")
    assert again.returncode == 0, again.stdout


async def test_a_field_the_hash_lacks_is_backfilled_by_rebuild(
    store: EventStore, redis_client: aioredis.Redis
) -> None:
    """What a hash written before ``ProductState.description`` existed looks like."""
    ids = await shop(store)
    mug = f"product:{ids['mug']}"
    await redis_client.hdel(store.keys.state(mug), "description")

    report = await verify_state(store)
    assert [(d.aggregate, d.fields) for d in report.differences] == [
        (mug, {"description": (None, "Azul")})
    ]
    rebuilt = await rebuild_state(store)
    assert rebuilt.written == [mug]
    assert (await store.state(mug))["description"] == "Azul"
    assert (await verify_state(store)).ok


async def test_a_lost_state_is_recreated_and_orders_see_it(
    store: EventStore, redis_client: aioredis.Redis
) -> None:
    ids = await shop(store)
    tee = f"product:{ids['tee']}"
    await redis_client.delete(store.keys.state(tee))

    await rebuild_state(store)
    assert (await store.state(tee))["stock"] == "5"
    order = BillOrder(
        account_id=ids["account"], lines=[BillLine(product_id=ids["tee"], quantity=6)]
    )
    with pytest.raises(InsufficientStock):
        await execute(store, order, META)


async def test_rebuild_never_overwrites_an_append_that_happened_after_it_read(
    store: EventStore, redis_client: aioredis.Redis
) -> None:
    """The put refuses when the hash's write counter moved: the append wins."""
    ids = await shop(store)
    mug = f"product:{ids['mug']}"
    read = (await read_hashes(store, [mug]))[mug]
    stale = (await store.load([mug]))[mug]
    await execute(store, AdjustStock(product_id=ids["mug"], delta=4), META)

    assert not await put_state(store, mug, read["w"], stale)
    assert (await store.state(mug))["stock"] == "7"
    assert {k: v for k, v in (await store.state(mug)).items() if k != "w"} == {
        **encode_state(stale),
        "stock": "7",
        # One version past the one read (the billing saga's reserve and take are two more
        # product versions on the cluster than the single append on one node).
        "v": str(int(read["v"]) + 1),
    }


async def test_rebuild_while_orders_are_billed_loses_no_decrement(store: EventStore) -> None:
    ids = await shop(store)
    await execute(store, AdjustStock(product_id=ids["tee"], delta=200), META)

    async def orders() -> None:
        for _ in range(40):
            await execute(
                store,
                BillOrder(
                    account_id=ids["account"],
                    lines=[BillLine(product_id=ids["tee"], quantity=1)],
                ),
                META,
            )

    async def rebuilds() -> None:
        for _ in range(3):
            await rebuild_state(store)

    await asyncio.gather(orders(), rebuilds())
    assert (await store.state(f"product:{ids['tee']}"))["stock"] == str(5 + 200 - 40)
    assert (await verify_state(store)).ok


async def test_verify_names_a_differing_password_hash_without_printing_it(
    store: EventStore, redis_client: aioredis.Redis
) -> None:
    ids = await shop(store)
    account = f"account:{ids['account']}"
    await redis_client.hset(store.keys.state(account), "password_hash", "$argon2id$stolen")

    [diff] = (await verify_state(store)).differences
    assert str(diff) == f"{account}: differs (password_hash: state=<redacted> log=<redacted>)"
