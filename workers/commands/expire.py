"""``streamshop expire``: run the reservation expiry worker (unpaid orders → ``expired``)."""

from __future__ import annotations

import argparse
import asyncio
import signal

from app.commands import execute
from app.commands.errors import DomainError
from app.commands.orders import ExpireOrder
from app.commands.saga import BillingSaga
from app.settings import Settings
from events.store import EventStore, Metadata
from workers.expiry import Expire, ExpiryWorker, Settle

META = Metadata(actor="system:expiry", source="worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--once", action="store_true", help="run one round and exit")


def expirer(store: EventStore) -> Expire:
    """The ``expire`` callback of the worker: the ``ExpireOrder`` command."""

    async def expire(order_id: str, at: int) -> bool:
        try:
            await execute(store, ExpireOrder(order_id=order_id, at=at), META)
        except DomainError:
            return False
        return True

    return expire


def settler(store: EventStore) -> Settle:
    """The ``settle`` callback: a billing saga's reservation past its deadline is taken
    (order billed) or released (abandoned, or abandoned now)."""
    saga = BillingSaga(store, META)

    async def settle(order_id: str, product_id: str, quantity: int, at: int) -> bool:
        return await saga.settle(order_id, product_id, quantity, at) != "waiting"

    return settle


async def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = settings.redis.connect()
    try:
        store = EventStore(redis, settings.redis.keys, replica_wait=settings.redis.replica_wait)
        await store.load_functions()
        worker = ExpiryWorker(store, expirer(store), settle=settler(store))
        if args.once:
            print(f"expired {await worker.run_once()}")
            return 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run(args.interval)
        return 0
    finally:
        await redis.aclose()
