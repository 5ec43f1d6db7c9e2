"""``streamshop demo``: populate a demo shop (pt_BR) through the real command path.

Every account, product and order goes through :func:`app.commands.execute`, exactly as if it
came over HTTP: the same validation, decisions, uniqueness reservations and stock guards.
The data comes from :mod:`workers.demo` and is a function of ``--seed``, with stable ids,
so running the command again adds nothing: aggregates that exist are skipped. An order
refused for lack of stock triggers a restock (``StockAdjusted``) and is billed again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from app.commands import execute
from app.commands.accounts import SignUp, account_aggregate
from app.commands.billing import BillLine, BillOrder, order_aggregate
from app.commands.catalog import AdjustStock, CreateProduct, product_aggregate
from app.commands.categories import CreateCategory
from app.commands.errors import (
    AccountAlreadyExists,
    CategoryAlreadyExists,
    DuplicateEmail,
    DuplicateSku,
    InsufficientStock,
    ProductAlreadyExists,
)
from app.passwords import Passwords
from app.settings import Settings
from events.errors import RedisNotSuitable
from events.ids import uuid7
from events.store import EventStore, Metadata, check_redis
from workers.demo import CATEGORIES, DemoAccount, DemoOrder, DemoProduct, DemoShop, make_shop
from workers.progress import Progress

DEFAULT_PASSWORD = "senha-demo-123"
"""Every demo account's password (log in with any demo email and this)."""
RESTOCK = 500
"""Units added when a demo order finds a product short."""

T = TypeVar("T")


@dataclass
class DemoReport:
    """What a run did, per kind: ``created``, ``existing`` (skipped), ``refused``."""

    accounts: Counter[str] = field(default_factory=Counter)
    products: Counter[str] = field(default_factory=Counter)
    orders: Counter[str] = field(default_factory=Counter)
    restocks: int = 0
    positions: list[str] = field(default_factory=list)
    """Position token of every append made, for read-your-writes waits."""

    def summary(self) -> str:
        def part(name: str, c: Counter[str]) -> str:
            return (
                f"{name}: {c['created']} created, {c['existing']} existing, {c['refused']} refused"
            )

        return "; ".join(
            [
                part("accounts", self.accounts),
                part("products", self.products),
                part("orders", self.orders),
                f"restocks: {self.restocks}",
            ]
        )


async def _bounded(limit: int, items: Iterable[T], work: Callable[[T], Awaitable[None]]) -> None:
    semaphore = asyncio.Semaphore(max(1, limit))

    async def one(item: T) -> None:
        async with semaphore:
            await work(item)

    await asyncio.gather(*(one(item) for item in items))


async def _exists(store: EventStore, aggregate: str) -> bool:
    return int((await store.state(aggregate)).get("v", 0) or 0) > 0


async def populate(
    store: EventStore,
    shop: DemoShop,
    *,
    hash_password: Callable[[str], Awaitable[str]],
    password: str = DEFAULT_PASSWORD,
    concurrency: int = 8,
    hash_concurrency: int | None = None,
    progress: Progress | None = None,
) -> DemoReport:
    """Append ``shop`` through the command handlers; returns what was created and skipped.

    ``hash_password`` is the API's hasher (``Passwords.hash``): demo accounts can log in.
    Hashing is CPU-bound, so it runs at most ``hash_concurrency`` (default: cores) at once.
    """
    report = DemoReport()
    correlation = uuid7()
    system = Metadata(actor="system:demo", correlation=correlation, source="cli:demo")
    usable_accounts: set[str] = set()
    usable_products: set[str] = set()
    hashing = asyncio.Semaphore(hash_concurrency or os.cpu_count() or 2)

    async def sign_up(account: DemoAccount) -> None:
        if await _exists(store, account_aggregate(account.account_id)):
            report.accounts["existing"] += 1
            usable_accounts.add(account.account_id)
            return
        async with hashing:
            password_hash = await hash_password(password)
        command = SignUp(
            account_id=account.account_id,
            email=account.email,
            name=account.name,
            password_hash=password_hash,
        )
        try:
            result = await execute(store, command, system)
        except AccountAlreadyExists:
            report.accounts["existing"] += 1
        except DuplicateEmail:
            report.accounts["refused"] += 1
            return
        else:
            report.accounts["created"] += 1
            report.positions.append(result.position)
        usable_accounts.add(account.account_id)

    async def create(product: DemoProduct) -> None:
        if await _exists(store, product_aggregate(product.product_id)):
            report.products["existing"] += 1
            usable_products.add(product.product_id)
            return
        command = CreateProduct(
            product_id=product.product_id,
            sku=product.sku,
            name=product.name,
            description=product.description,
            category=product.category,
            price=product.price,
            stock=product.stock,
        )
        try:
            result = await execute(store, command, system)
        except ProductAlreadyExists:
            report.products["existing"] += 1
        except DuplicateSku:
            report.products["refused"] += 1
            return
        else:
            report.products["created"] += 1
            report.positions.append(result.position)
        usable_products.add(product.product_id)

    async def bill(order: DemoOrder) -> None:
        if await _exists(store, order_aggregate(order.order_id)):
            report.orders["existing"] += 1
            return
        lines = [BillLine(product_id=p, quantity=q) for p, q in order.lines if p in usable_products]
        if order.account_id not in usable_accounts or not lines:
            report.orders["refused"] += 1
            return
        command = BillOrder(account_id=order.account_id, lines=lines, order_id=order.order_id)
        meta = Metadata(
            actor=f"account:{order.account_id}", correlation=correlation, source="cli:demo"
        )
        for _ in range(3):
            try:
                result = await execute(store, command, meta)
            except InsufficientStock as short:
                product_id = str(short.extra.get("product_id", ""))
                restock = AdjustStock(
                    product_id=product_id, delta=RESTOCK, reason="reposição de estoque"
                )
                restocked = await execute(store, restock, system)
                report.restocks += 1
                report.positions.append(restocked.position)
                continue
            report.orders["created"] += 1
            report.positions.append(result.position)
            return
        report.orders["refused"] += 1

    async def create_category(slug: str) -> None:
        try:
            result = await execute(store, CreateCategory(slug=slug, name=CATEGORIES[slug]), system)
        except CategoryAlreadyExists:
            return
        report.positions.append(result.position)

    def counted(work: Callable[[T], Awaitable[None]]) -> Callable[[T], Awaitable[None]]:
        async def one(item: T) -> None:
            await work(item)
            if progress is not None:
                progress.add(1)

        return one

    if progress is not None:
        progress.phase = "accounts"
        progress.start(len(shop.accounts) + len(shop.products) + len(shop.orders))
    await _bounded(concurrency, shop.accounts, counted(sign_up))
    await _bounded(concurrency, sorted({p.category for p in shop.products}), create_category)
    if progress is not None:
        progress.set_phase("products")
    await _bounded(concurrency, shop.products, counted(create))
    if progress is not None:
        progress.set_phase("orders")
    await _bounded(concurrency, shop.orders, counted(bill))
    if progress is not None:
        progress.set_phase("done")
        progress.finish()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=25, help="customer accounts (default 25)")
    parser.add_argument("--products", type=int, default=60, help="catalog products (default 60)")
    parser.add_argument("--orders", type=int, default=300, help="billed orders (default 300)")
    parser.add_argument(
        "--seed", type=int, default=42, help="same seed, same shop: a re-run adds nothing"
    )
    parser.add_argument(
        "--password", default=DEFAULT_PASSWORD, help="password of every demo account"
    )
    parser.add_argument(
        "--stock", type=int, default=None, help="opening stock of every product (default 50-500)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="commands in flight")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    for name in ("accounts", "products", "orders"):
        if getattr(args, name) < 0:
            print(f"--{name} must not be negative")
            return 2
    if args.orders and (not args.accounts or not args.products):
        print("orders need --accounts and --products above zero")
        return 2
    shop = make_shop(args.accounts, args.products, args.orders, args.seed, args.stock)
    client = settings.redis.connect()
    try:
        try:
            await check_redis(client)
        except RedisNotSuitable as exc:
            print(f"refused: {settings.redis.url}: {exc}")
            return 1
        store = EventStore(client, settings.redis.keys)
        await store.load_functions()
        passwords = await asyncio.to_thread(Passwords, settings.auth)
        report = await populate(
            store,
            shop,
            hash_password=passwords.hash,
            password=args.password,
            concurrency=args.concurrency,
            progress=Progress("demo", stream=sys.stderr, enabled=not args.no_progress),
        )
    finally:
        await client.aclose()
    print(f"demo shop (seed {args.seed}) on prefix {settings.redis.prefix!r}: {report.summary()}")
    if report.accounts["created"]:
        print(f"demo accounts log in with their email and the password {args.password!r}")
    return 0
