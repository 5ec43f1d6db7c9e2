"""The billing saga on a real three-primary Redis Cluster (issue #19): a bill-now order whose
products sit in other slots than the order is billed by single-slot steps, and keeps the
guarantees of the single atomic append across refusals, retries and crashes midway."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from app.commands import execute
from app.commands.accounts import SignUp
from app.commands.billing import BillLine, BillOrder, idempotency_scope, receipt_of
from app.commands.cart import SetCartItem
from app.commands.checkout import Checkout, Placed, placed_of
from app.commands.errors import IdempotencyKeyReused, InsufficientStock
from app.commands.orders import CANCEL_ORDER, CancelOrder, RecordPayment
from app.commands.saga import BillingAbandoned, BillingSaga, claim
from events.ids import uuid7
from events.states import OrderState, initial
from events.store import Append, EventStore, Metadata
from events.types import ProductCreated, StockAdjusted
from tests.support.cluster import single_and_cluster
from workers.commands.expire import expirer, settler
from workers.expiry import ExpiryWorker
from workers.state import verify_state

META = Metadata(actor="test")

on_the_cluster = pytest.mark.parametrize("redis_client", ["cluster"], indirect=True)


async def an_account(store: EventStore) -> str:
    """An account signed up through its command (co-located with its email reservation)."""
    signed = await execute(
        store, SignUp(email=f"{uuid.uuid4().hex[:8]}@x.co", name="Ana", password_hash="h"), META
    )
    return str(msgspec.json.decode(signed.result)["account_id"])


async def products(store: EventStore, *stocks: int) -> list[str]:
    """Products with ``stocks``, each in another partition (so on the cluster, another slot)."""
    ids: list[str] = []
    used: set[int] = set()
    while len(ids) < len(stocks):
        product_id = uuid7()
        partition = store.keys.partition_of(f"product:{product_id}")
        if partition in used:
            continue
        used.add(partition)
        event = ProductCreated(
            product_id=product_id,
            sku=f"S-{uuid.uuid4().hex[:8]}",
            name="mug",
            price=100,
            stock=stocks[len(ids)],
        )
        await store.append(
            Append(
                events=[event],
                expect={event.aggregate(): 0},
                seen={event.aggregate(): initial(event.aggregate())},
            )
        )
        ids.append(product_id)
    return ids


async def stock(store: EventStore, product_id: str) -> tuple[int, int]:
    state = await store.state(f"product:{product_id}")
    return int(state.get("stock", 0)), int(state.get("reserved", 0))


async def order(store: EventStore, order_id: str) -> OrderState:
    loaded = await store.load([f"order:{order_id}"])
    state = loaded[f"order:{order_id}"]
    assert isinstance(state, OrderState)
    return state


async def types_in_log(store: EventStore) -> list[str]:
    return [type(r.event).__name__ async for r in store.read_all()]


def two_lines(first: str, second: str) -> list[BillLine]:
    return [BillLine(product_id=first, quantity=2), BillLine(product_id=second, quantity=1)]


@on_the_cluster
async def test_an_order_spanning_slots_is_billed_and_stock_is_exact(store: EventStore) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)

    result = await execute(
        store, BillOrder(account_id=account_id, lines=two_lines(first, second)), META
    )

    receipt = receipt_of(result)
    assert receipt.total == 300
    assert (await order(store, receipt.order_id)).status == "billed"
    assert await stock(store, first) == (3, 0)
    assert await stock(store, second) == (2, 0)
    assert sorted(await types_in_log(store)).count("StockTaken") == 2
    assert "OrderBillingStarted" in await types_in_log(store)
    assert (await verify_state(store)).ok


@single_and_cluster
async def test_on_one_node_the_order_is_one_append_and_on_the_cluster_a_saga(
    store: EventStore, redis_client: object
) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    before = await store.count()

    await execute(store, BillOrder(account_id=account_id, lines=two_lines(first, second)), META)

    appended = (await types_in_log(store))[before:]
    on_cluster = "RedisCluster" in type(store.redis).__name__
    if on_cluster:
        assert appended.count("StockReserved") == 2 and appended.count("StockTaken") == 2
    else:
        assert appended == ["OrderBilled"]
    assert await stock(store, first) == (3, 0)


async def sell_out(store: EventStore, product_id: str) -> None:
    """Another sale takes the product's whole stock (a hand adjustment, for the test)."""
    aggregate = f"product:{product_id}"
    state = (await store.load([aggregate]))[aggregate]
    left, _ = await stock(store, product_id)
    event = StockAdjusted(product_id=product_id, delta=-left, reason="sold elsewhere")
    await store.append(Append(events=[event], seen={aggregate: state}))


@on_the_cluster
async def test_out_of_stock_on_the_second_product_releases_the_first(store: EventStore) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    command = BillOrder(account_id=account_id, lines=two_lines(first, second), order_id=uuid7())
    saga = BillingSaga(store, META)
    await saga.start(command)  # decided on enough stock of both
    await sell_out(store, second)  # then the second sells out before its step

    with pytest.raises(InsufficientStock) as refused:
        await saga.run(command, None)

    assert refused.value.extra["product_id"] == second
    assert await stock(store, first) == (5, 0)
    assert await stock(store, second) == (0, 0)
    assert (await order(store, command.order_id or "")).status == "abandoned"
    log = await types_in_log(store)
    assert log.count("StockReserved") == 1 and log.count("StockReleased") == 1
    assert "OrderBilled" not in log
    assert (await verify_state(store)).ok


@on_the_cluster
async def test_concurrent_orders_never_take_stock_below_zero(store: EventStore) -> None:
    account_id = await an_account(store)
    plenty, scarce = await products(store, 100, 3)
    lines = [BillLine(product_id=plenty, quantity=1), BillLine(product_id=scarce, quantity=1)]

    outcomes = await asyncio.gather(
        *(execute(store, BillOrder(account_id=account_id, lines=lines), META) for _ in range(8)),
        return_exceptions=True,
    )

    billed = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, InsufficientStock)]
    assert len(billed) == 3 and len(refused) == 5, outcomes
    assert await stock(store, scarce) == (0, 0)
    assert await stock(store, plenty) == (97, 0)
    assert (await verify_state(store)).ok


async def crashed_after_reserving_one(
    store: EventStore, account_id: str, lines: list[BillLine], key: str, ttl: int = 60
) -> str:
    """The first attempt of ``key``: claim, start, reserve the first product, then die."""
    command = BillOrder(account_id=account_id, lines=lines, order_id=uuid7())
    order_id = await claim(store, idempotency_scope(account_id, key), command)
    saga = BillingSaga(store, META, ttl=ttl)
    started = await saga.start(msgspec.structs.replace(command, order_id=order_id))
    line = lines[0]
    await saga.reserve(order_id, line.product_id, line.quantity, started.reserved_until)
    return order_id


@on_the_cluster
async def test_a_retry_after_a_crash_between_steps_finishes_the_saga(store: EventStore) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    lines = two_lines(first, second)
    order_id = await crashed_after_reserving_one(store, account_id, lines, "k-1")
    assert await stock(store, first) == (3, 2)

    retried = await execute(
        store, BillOrder(account_id=account_id, lines=lines), META, idempotency_key="k-1"
    )
    again = await execute(
        store, BillOrder(account_id=account_id, lines=lines), META, idempotency_key="k-1"
    )

    assert receipt_of(retried).order_id == order_id == receipt_of(again).order_id
    assert receipt_of(again).position == receipt_of(retried).position
    assert await stock(store, first) == (3, 0)
    assert await stock(store, second) == (2, 0)
    assert (await types_in_log(store)).count("OrderBilled") == 1
    assert (await verify_state(store)).ok


@on_the_cluster
async def test_a_retry_after_the_deadline_finds_its_saga_undone(store: EventStore) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    lines = two_lines(first, second)
    order_id = await crashed_after_reserving_one(store, account_id, lines, "k-2")
    deadline = (await order(store, order_id)).reserved_until
    worker = ExpiryWorker(store, expirer(store), settle=settler(store), clock=lambda: deadline)
    await worker.run_once()

    with pytest.raises(BillingAbandoned):
        await execute(
            store, BillOrder(account_id=account_id, lines=lines), META, idempotency_key="k-2"
        )

    assert (await order(store, order_id)).status == "abandoned"
    assert await stock(store, first) == (5, 0)
    assert await stock(store, second) == (3, 0)
    assert (await verify_state(store)).ok


@on_the_cluster
async def test_a_retry_past_the_deadline_undoes_the_saga_before_the_worker_ran(
    store: EventStore,
) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    lines = two_lines(first, second)
    order_id = await crashed_after_reserving_one(store, account_id, lines, "k-3", ttl=0)

    with pytest.raises(BillingAbandoned):
        await execute(
            store, BillOrder(account_id=account_id, lines=lines), META, idempotency_key="k-3"
        )

    assert (await order(store, order_id)).abandoned == "expired"
    assert await stock(store, first) == (5, 0)
    assert await stock(store, second) == (3, 0)
    worker = ExpiryWorker(store, expirer(store), settle=settler(store))
    await worker.run_once()  # the worker finds it settled: nothing moves twice
    assert await stock(store, first) == (5, 0)
    assert (await verify_state(store)).ok


@on_the_cluster
async def test_a_retry_with_the_same_key_for_another_order_is_refused(store: EventStore) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    await execute(
        store,
        BillOrder(account_id=account_id, lines=two_lines(first, second)),
        META,
        idempotency_key="k-4",
    )

    with pytest.raises(IdempotencyKeyReused):
        await execute(
            store,
            BillOrder(account_id=account_id, lines=[BillLine(product_id=first, quantity=1)]),
            META,
            idempotency_key="k-4",
        )
    assert await stock(store, first) == (3, 0)


@on_the_cluster
async def test_expiry_returns_a_reservation_that_was_never_confirmed(store: EventStore) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    command = BillOrder(account_id=account_id, lines=two_lines(first, second), order_id=uuid7())
    saga = BillingSaga(store, META)
    started = await saga.start(command)
    await saga.reserve_all(command.order_id or "", started)  # every step but confirm
    assert await stock(store, second) == (2, 1)
    early = ExpiryWorker(
        store, expirer(store), settle=settler(store), clock=lambda: started.reserved_until - 1
    )
    late = ExpiryWorker(
        store, expirer(store), settle=settler(store), clock=lambda: started.reserved_until
    )

    assert await early.run_once() == 0
    assert await stock(store, second) == (2, 1)
    assert await late.run_once() == 2

    assert await stock(store, first) == (5, 0)
    assert await stock(store, second) == (3, 0)
    assert (await order(store, command.order_id or "")).status == "abandoned"
    assert "OrderBilled" not in await types_in_log(store)
    assert (await verify_state(store)).ok


@on_the_cluster
async def test_expiry_takes_the_stock_of_an_order_billed_before_the_crash(
    store: EventStore,
) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    command = BillOrder(account_id=account_id, lines=two_lines(first, second), order_id=uuid7())
    saga = BillingSaga(store, META)
    started = await saga.start(command)
    await saga.reserve_all(command.order_id or "", started)
    await saga.confirm(command.order_id or "", None)  # crash before the takes
    worker = ExpiryWorker(
        store, expirer(store), settle=settler(store), clock=lambda: started.reserved_until
    )

    assert await worker.run_once() == 2

    assert (await order(store, command.order_id or "")).status == "billed"
    assert await stock(store, first) == (3, 0)
    assert await stock(store, second) == (2, 0)
    assert (await verify_state(store)).ok


async def billed_order(store: EventStore, account_id: str, lines: list[BillLine]) -> str:
    result = await execute(store, BillOrder(account_id=account_id, lines=lines), META)
    return receipt_of(result).order_id


@on_the_cluster
async def test_cancelling_an_order_billed_by_the_saga_returns_its_stock(store: EventStore) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    order_id = await billed_order(store, account_id, two_lines(first, second))

    await execute(store, CancelOrder(order_id=order_id, account_id=account_id), META)

    assert (await order(store, order_id)).status == "cancelled"
    assert await stock(store, first) == (5, 0)
    assert await stock(store, second) == (3, 0)
    assert (await verify_state(store)).ok


@on_the_cluster
async def test_the_worker_finishes_a_cancellation_whose_effects_a_crash_cut_off(
    store: EventStore,
) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    order_id = await billed_order(store, account_id, two_lines(first, second))
    cancel = CancelOrder(order_id=order_id, account_id=account_id)
    append = CANCEL_ORDER.decide(cancel, await store.load(CANCEL_ORDER.reads(cancel)))
    split = store._split(append)
    assert split is not None
    home, effects = split
    away = [a.removeprefix("product:") for group in effects.values() for a in group]
    before = {p: await stock(store, p) for p in away}
    await store.append(home)  # the order's slot only: the process dies before the effects
    assert away and {p: await stock(store, p) for p in away} == before
    worker = ExpiryWorker(store, expirer(store), settle=settler(store))

    await worker.run_once()
    await worker.run_once()

    assert await stock(store, first) == (5, 0)
    assert await stock(store, second) == (3, 0)
    assert (await verify_state(store)).ok


@on_the_cluster
async def test_an_order_cancelled_before_its_takes_were_finished_gets_its_stock_back_once(
    store: EventStore,
) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    command = BillOrder(account_id=account_id, lines=two_lines(first, second), order_id=uuid7())
    saga = BillingSaga(store, META)
    started = await saga.start(command)
    order_id = command.order_id or ""
    await saga.reserve_all(order_id, started)
    await saga.confirm(order_id, None)  # crash before the takes, then the customer cancels
    await execute(store, CancelOrder(order_id=order_id, account_id=account_id), META)
    worker = ExpiryWorker(
        store, expirer(store), settle=settler(store), clock=lambda: started.reserved_until
    )

    await worker.run_once()

    assert await stock(store, first) == (5, 0)
    assert await stock(store, second) == (3, 0)
    assert (await verify_state(store)).ok


async def checked_out(
    store: EventStore, account_id: str, lines: list[BillLine], key: str
) -> Placed:
    for line in lines:
        await execute(
            store,
            SetCartItem(account_id=account_id, product_id=line.product_id, quantity=line.quantity),
            META,
        )
    result = await execute(
        store, Checkout(account_id=account_id, lines=lines), META, idempotency_key=key
    )
    return placed_of(result)


@on_the_cluster
async def test_a_checkout_spanning_slots_reserves_its_stock_and_payment_takes_it(
    store: EventStore,
) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    lines = two_lines(first, second)

    placed = await checked_out(store, account_id, lines, "c-1")
    again = placed_of(
        await execute(
            store, Checkout(account_id=account_id, lines=lines), META, idempotency_key="c-1"
        )
    )

    assert placed.status == "awaiting_payment" and again.order_id == placed.order_id
    assert await stock(store, first) == (3, 2)
    assert await stock(store, second) == (2, 1)
    assert (await store.state(f"cart:{account_id}")).get("items", "") in ("", "[]")
    assert "OrderBillingStarted" in await types_in_log(store)
    paid = RecordPayment(
        order_id=placed.order_id, attempt=1, payment_id="pay-1", amount=placed.total, at=0
    )
    await execute(store, paid, META)
    assert await stock(store, first) == (3, 0)
    assert await stock(store, second) == (2, 0)
    assert (await verify_state(store)).ok


@on_the_cluster
async def test_an_unpaid_checkout_spanning_slots_expires_and_its_stock_returns_once(
    store: EventStore,
) -> None:
    account_id = await an_account(store)
    first, second = await products(store, 5, 3)
    placed = await checked_out(store, account_id, two_lines(first, second), "c-2")
    worker = ExpiryWorker(
        store, expirer(store), settle=settler(store), clock=lambda: placed.reserved_until
    )

    await worker.run_once()
    await worker.run_once()

    assert (await order(store, placed.order_id)).status == "expired"
    assert await stock(store, first) == (5, 0)
    assert await stock(store, second) == (3, 0)
    assert (await verify_state(store)).ok
