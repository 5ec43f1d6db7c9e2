"""After the faults: wait for the projector, look at the log and every view, and compare each
with the clients' :class:`~tests.faults.load.Ledger`.

:func:`observe` gathers what is there (it talks to the stores directly, not through the
proxy, and runs the operator's CLI: ``verify``, ``audit verify``, ``dlq list``);
:func:`judge` turns it into named :class:`Check` results. Every problem names the order
(idempotency key and order id), the view, and the field, with both values.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from events.archive import MANIFEST
from events.codec import RecordedEvent
from events.positions import InvalidPosition, parse_position, parse_stream_id
from events.store import EventStore
from events.types import (
    AccountCreated,
    CategoryCreated,
    CustomerForgotten,
    OrderBilled,
    OrderBillingAbandoned,
    OrderBillingStarted,
    OrderExpired,
    OrderPaid,
    OrderPlaced,
    ProductCreated,
    StockAdjusted,
    StockReleased,
    StockReserved,
    StockTaken,
)
from tests.faults.harness import System
from tests.faults.load import ALREADY_DONE, Checkout, Ledger, Reuse, StockDelta, Write
from tests.support.personal_scan import archive_dump_of, leaks, mongo_dump, pg_dump, redis_dump
from workers.views import VIEWS, mongo_collections, pg_schema

CLI_LIMIT_S = 150.0
"""Bound on each operator command after the run (six run side by side on 2 cores, each
reading the whole log, archive included; a hang guard, not a speed requirement)."""

SHOW = 8
"""Problems listed per check (the count is always complete)."""


@dataclass(frozen=True)
class LoggedOrder:
    entry: str
    """``p<partition>/<entry id>``: where the order sits in the log (to find it in the
    projector's ``batch_applied`` lines)."""
    event_id: str
    correlation: str
    order_id: str
    account_id: str
    lines: list[tuple[str, int]]
    total: int


@dataclass(frozen=True)
class LoggedWrite:
    """A category, seller, product or forget as the log has it."""

    kind: str
    subject: str
    """The slug, the seller's account id, the SKU, or the account id forgotten."""
    entry: str
    event_id: str
    detail: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedDelta:
    """A ``StockAdjusted`` of a stock delta over HTTP, as the log has it."""

    product_id: str
    delta: int
    entry: str
    event_id: str


@dataclass
class SagaLog:
    """One saga of a Redis Cluster (billing or checkout) as the log has it."""

    order_id: str
    place: bool
    """A checkout's saga (ends ``OrderPlaced``), else a bill-now one (ends ``OrderBilled``)."""
    entry: str
    ends: list[str] = field(default_factory=list)
    """``billed`` / ``placed`` / ``abandoned``, each time the log has one."""
    reserved: Counter[str] = field(default_factory=Counter)
    """Product → units reserved (``StockReserved``), and likewise taken and released."""
    taken: Counter[str] = field(default_factory=Counter)
    released: Counter[str] = field(default_factory=Counter)

    def settled(self) -> bool:
        """Ended once, and every reservation went where that end sends it: taken (billed),
        released (abandoned), or handed to the order's lifecycle (placed)."""
        if len(self.ends) != 1:
            return False
        end = self.ends[0]
        if end == "billed":
            return self.taken == self.reserved and not self.released
        if end == "abandoned":
            return self.released == self.reserved and not self.taken
        return not self.taken and not self.released


@dataclass
class Observed:
    """Everything looked at after the run."""

    caught_up_s: float | None = None
    behind: list[str] = field(default_factory=list)
    """``view pN: checkpoint X < head Y`` for every partition a view had not reached."""
    orders_in_log: list[LoggedOrder] = field(default_factory=list)
    placed_in_log: list[LoggedOrder] = field(default_factory=list)
    """``OrderPlaced`` (checkouts); ``correlation`` is the checkout's Idempotency-Key."""
    paid_in_log: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    """Order id → (payment id, event id, entry) of each ``OrderPaid``."""
    expired_in_log: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Order id → (event id, entry) of each ``OrderExpired``."""
    restocks_in_log: Counter[str] = field(default_factory=Counter)
    """Event id → how often the log holds it."""
    write_stock: dict[str, int | None] = field(default_factory=dict)
    write_reserved: dict[str, int | None] = field(default_factory=dict)
    rm_reserved: dict[str, int | None] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    rm_stock: dict[str, int | None] = field(default_factory=dict)
    rm_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    rm_accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    dw_lines: dict[str, list[tuple[int, str, int]]] = field(default_factory=dict)
    """Order id → (line_no, product id, quantity) rows of ``fact_order_line``."""
    audit_rows: Counter[str] = field(default_factory=Counter)
    """Event id → rows in the audit log."""
    verify: dict[str, tuple[int, str]] = field(default_factory=dict)
    audit_verify: tuple[int, str] = (0, "")
    dlq_list: tuple[int, str] = (0, "")
    dlq_streams: dict[str, int] = field(default_factory=dict)
    log_ids: dict[int, list[str]] = field(default_factory=dict)
    """Partition → entry ids as ``EventStore.read_raw`` reads them (archive + live), in order."""
    entries_added: dict[int, int] = field(default_factory=dict)
    """Partition → ``entries-added`` of its stream: every entry ever appended to it."""
    live_entries: dict[int, int] = field(default_factory=dict)
    """Partition → entries still in Redis."""
    archive_markers: dict[int, str] = field(default_factory=dict)
    """Partition → Redis's archive marker (the last entry id that left Redis)."""
    archive_segments: dict[int, list[tuple[str, str, int]]] = field(default_factory=dict)
    """Partition → (first, last, rows) of each segment the archive's manifest lists."""
    archive_leftovers: list[str] = field(default_factory=list)
    writes_in_log: dict[str, list[LoggedWrite]] = field(default_factory=dict)
    """Correlation → the categories, sellers, products, forgets and customer accounts
    (sign-ups) it appended."""
    appended_by: dict[str, list[str]] = field(default_factory=dict)
    """Request id of a reused Idempotency-Key (:class:`~tests.faults.load.Reuse`) → the
    entries of every event it appended, whatever their type."""
    deltas_in_log: dict[str, list[LoggedDelta]] = field(default_factory=dict)
    """Correlation → its ``StockAdjusted`` (a delta over HTTP is keyed ``w-…``; an ingress
    restock has its event id)."""
    forgets_in_log: Counter[str] = field(default_factory=Counter)
    """Account id → ``CustomerForgotten`` entries for it."""
    sagas: dict[str, SagaLog] = field(default_factory=dict)
    """Order id → its saga (Redis Cluster: orders whose keys span slots)."""
    leaks: dict[str, list[str]] = field(default_factory=dict)
    """Forgotten account id → ``<store>: <what>`` of its personal data found in clear."""
    """Files in the archive that its manifest does not list (an interrupted run's)."""


@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        if self.ok:
            return f"{self.name}: OK{f' ({self.note})' if self.note else ''}"
        lines = [f"{self.name}: FAILED, {len(self.problems)} problem(s)"]
        lines += [f"  {p}" for p in self.problems[:SHOW]]
        if len(self.problems) > SHOW:
            lines.append(f"  … and {len(self.problems) - SHOW} more")
        if self.note:
            lines.append(f"  ({self.note})")
        return "\n".join(lines)


# -- catching up ---------------------------------------------------------------------------


async def wait_caught_up(system: System, observed: Observed, timeout_s: float) -> None:
    """Until every view's checkpoint has reached the head of every partition, or timeout.

    The checkpoints are read straight from each view's store (the version Redis points at),
    not through the projections: opening those runs their set-up DDL, which can deadlock
    with a projector writing the same tables.
    """
    redis = system.redis()
    store = EventStore(redis, system.settings.redis.keys)
    started = time.monotonic()
    try:
        while True:
            heads = await store.heads()
            behind = []
            for name in VIEWS:
                async with Checkpoints(system, name) as checkpoints:
                    positions = await checkpoints.positions()
                for p, head in heads.items():
                    if head is None:
                        continue
                    at = None if positions is None else positions.get(p)
                    if at is None or parse_stream_id(at) < parse_stream_id(head):
                        behind.append(f"{name} p{p}: checkpoint {at} < head {head}")
            if not behind:
                observed.caught_up_s = round(time.monotonic() - started, 2)
                observed.behind = []
                return
            observed.behind = behind
            if time.monotonic() - started > timeout_s:
                return
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


class Checkpoints:
    """Reads one view's checkpoints as stored (``None`` while its store does not answer)."""

    def __init__(self, system: System, view: str) -> None:
        self.system, self.view = system, view
        self.mongo: AsyncMongoClient[Any] | None = None

    async def __aenter__(self) -> Checkpoints:
        self.version = await view_version(self.system, self.view)
        if self.view == "read_models":
            self.mongo = AsyncMongoClient(
                self.system.env["MONGO_URL"], serverSelectionTimeoutMS=500
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.mongo is not None:
            await self.mongo.close()

    async def read(self) -> list[Any] | None:
        if self.mongo is not None:
            names = mongo_collections(self.version)
            try:
                db = self.mongo[self.system.env["MONGO_DB"]]
                return await db[names.checkpoints].find({}).sort("_id").to_list(None)
            except PyMongoError:
                return None
        try:
            conn = await asyncpg.connect(self.system.pg_direct, timeout=2)
        except (OSError, asyncpg.PostgresError):
            return None
        try:
            rows = await conn.fetch(
                f'SELECT partition, entry_id FROM "{pg_schema(self.view, self.version)}"'
                ".checkpoints ORDER BY partition"
            )
            return [tuple(r) for r in rows]
        except asyncpg.PostgresError:
            return None
        finally:
            await conn.close()

    async def positions(self) -> dict[int, str] | None:
        """Partition → last entry id applied (``None`` while the store does not answer)."""
        rows = await self.read()
        if rows is None:
            return None
        if self.mongo is not None:
            return {int(d["_id"]): str(d["entry_id"]) for d in rows}
        return {int(p): str(e) for p, e in rows}


async def view_version(system: System, view: str) -> str:
    client = system.redis(decode_responses=True)
    try:
        return str(await client.get(system.settings.redis.keys.view(view)) or "")
    finally:
        await client.aclose()


# -- looking -------------------------------------------------------------------------------


async def observe(system: System, ledger: Ledger, catch_up_s: float) -> Observed:
    observed = Observed()
    await wait_caught_up(system, observed, catch_up_s)
    keys = system.settings.redis.keys
    raw = system.redis()
    redis = system.redis(decode_responses=True)
    reuses = {r.request_id for r in ledger.reuses}
    try:
        store = EventStore(raw, keys)
        async for rec in store.read_all():
            observed.log_ids.setdefault(rec.partition, []).append(rec.entry_id)
            saga_step(observed.sagas, rec)
            if rec.correlation in reuses:
                observed.appended_by.setdefault(rec.correlation, []).append(
                    f"p{rec.partition}/{rec.entry_id} {type(rec.event).__name__}"
                )
            match rec.event:
                case OrderBilled() as e:
                    observed.orders_in_log.append(
                        LoggedOrder(
                            f"p{rec.partition}/{rec.entry_id}",
                            rec.id,
                            rec.correlation,
                            e.order_id,
                            e.account_id,
                            [(ln.product_id, ln.quantity) for ln in e.lines],
                            e.total,
                        )
                    )
                case StockAdjusted() as e:
                    observed.restocks_in_log[rec.id] += 1
                    observed.deltas_in_log.setdefault(rec.correlation, []).append(
                        LoggedDelta(
                            e.product_id, e.delta, f"p{rec.partition}/{rec.entry_id}", rec.id
                        )
                    )
                case CategoryCreated() as e:
                    _logged_write(observed, rec, "category", e.slug)
                case AccountCreated(role="seller") as e:
                    _logged_write(observed, rec, "seller", e.account_id)
                case AccountCreated(role="customer") as e:
                    _logged_write(observed, rec, "signup", e.account_id)
                case ProductCreated() as e:
                    detail = {
                        "category": e.category,
                        "seller_id": e.seller_id or "",
                        "product_id": e.product_id,
                    }
                    _logged_write(observed, rec, "product", e.sku, detail)
                case CustomerForgotten() as e:
                    observed.forgets_in_log[e.account_id] += 1
                    _logged_write(observed, rec, "forget", e.account_id)
                case OrderPlaced() as e:
                    observed.placed_in_log.append(
                        LoggedOrder(
                            f"p{rec.partition}/{rec.entry_id}",
                            rec.id,
                            rec.correlation,
                            e.order_id,
                            e.account_id,
                            [(ln.product_id, ln.quantity) for ln in e.lines],
                            e.total,
                        )
                    )
                case OrderPaid() as e:
                    observed.paid_in_log.setdefault(e.order_id, []).append(
                        (e.payment_id, rec.id, f"p{rec.partition}/{rec.entry_id}")
                    )
                case OrderExpired() as e:
                    observed.expired_in_log.setdefault(e.order_id, []).append(
                        (rec.id, f"p{rec.partition}/{rec.entry_id}")
                    )
        for pid in ledger.products:
            value = await redis.hget(keys.state(f"product:{pid}"), "stock")
            observed.write_stock[pid] = None if value is None else int(value)
            value = await redis.hget(keys.state(f"product:{pid}"), "reserved")
            observed.write_reserved[pid] = 0 if value is None else int(value)
        for name in VIEWS:
            observed.versions[name] = await redis.get(keys.view(name)) or ""
        if not system.cluster:  # no archive on the cluster run
            await _archive(store, observed)
        async for key in redis.scan_iter(match=f"{keys.prefix}:dlq:*", _type="stream"):
            observed.dlq_streams[key] = await redis.xlen(key)
    finally:
        await redis.aclose()
        await raw.aclose()
    await _read_models(system, ledger, observed)
    await _postgres(system, observed)
    await _scan_for_forgotten(system, ledger, observed)
    # The operator's commands, side by side (each verify locks only its own view).
    *verified, observed.audit_verify, observed.dlq_list = await asyncio.gather(
        *(system.streamshop("verify", name, limit_s=CLI_LIMIT_S) for name in (*VIEWS, "state")),
        system.streamshop("audit", "verify", limit_s=CLI_LIMIT_S),
        system.streamshop("dlq", "list", "--json", limit_s=CLI_LIMIT_S),
    )
    observed.verify = dict(zip((*VIEWS, "state"), verified, strict=True))
    return observed


def saga_step(sagas: dict[str, SagaLog], rec: RecordedEvent) -> None:
    """Fold one log entry into ``sagas`` if it is a saga's event."""
    match rec.event:
        case OrderBillingStarted() as e:
            # The log is read partition by partition: a product's StockReserved may come
            # before its order's start.
            saga = _saga(sagas, e.order_id)
            saga.entry, saga.place = f"p{rec.partition}/{rec.entry_id}", e.place
            return
        case OrderBilled(reserved=True) as e:
            oid, end = e.order_id, "billed"
        case OrderPlaced(reserved=True) as e:
            oid, end = e.order_id, "placed"
        case OrderBillingAbandoned() as e:
            oid, end = e.order_id, "abandoned"
        case StockReserved() as e:
            _saga(sagas, e.order_id).reserved[e.product_id] += e.quantity
            return
        case StockTaken() as e:
            _saga(sagas, e.order_id).taken[e.product_id] += e.quantity
            return
        case StockReleased() as e:
            _saga(sagas, e.order_id).released[e.product_id] += e.quantity
            return
        case _:
            return
    _saga(sagas, oid).ends.append(end)


def _saga(sagas: dict[str, SagaLog], order_id: str) -> SagaLog:
    """The saga of ``order_id``; one the log has no start for is kept with entry ``?`` (a
    finding of :func:`check_sagas`)."""
    return sagas.setdefault(order_id, SagaLog(order_id, False, "?"))


async def sagas_settled(system: System, timeout_s: float) -> tuple[bool, float]:
    """Until every saga in the log is settled (:meth:`SagaLog.settled`), bounded: whether
    they are, and the seconds it took. A saga a crash left half done settles by a client's
    retry or, at its deadline, by the expiry worker."""
    client = system.redis()
    store = EventStore(client, system.settings.redis.keys)
    started = time.monotonic()
    try:
        while True:
            sagas: dict[str, SagaLog] = {}
            async for rec in store.read_all():
                saga_step(sagas, rec)
            if all(s.settled() for s in sagas.values()):
                return True, round(time.monotonic() - started, 2)
            if time.monotonic() - started > timeout_s:
                return False, round(time.monotonic() - started, 2)
            await asyncio.sleep(1.0)
    finally:
        await client.aclose()


SAGA_CHECK = (
    "sagas: each ended once (billed, placed or abandoned); billed took, abandoned released, "
    "every reservation it made"
)


def check_sagas(ledger: Ledger, observed: Observed) -> Check:
    """After the deadline: no saga is half done. Each started saga ended exactly once; a
    billed one took exactly what it reserved, an abandoned one released exactly that, a
    placed one neither (its reservations belong to the order's payment or expiry, which the
    stock check follows); no reservation belongs to an order no saga started. And every
    acknowledged order billed by a saga is one the log says billed."""
    check = Check(SAGA_CHECK)
    for s in observed.sagas.values():
        if s.entry == "?":
            check.problems.append(f"order {s.order_id}: saga events without OrderBillingStarted")
        if s.settled():
            continue
        check.problems.append(
            f"HALF DONE: {'checkout' if s.place else 'billing'} saga of order {s.order_id} "
            f"(started {s.entry}): ends {s.ends or 'none'}, reserved {dict(s.reserved)}, "
            f"taken {dict(s.taken)}, released {dict(s.released)}"
        )
    for o in ledger.acknowledged():
        s = observed.sagas.get(o.order_id or "")
        if s is not None and s.ends[:1] != ["billed"]:
            check.problems.append(f"{_order(o)} was acknowledged, its saga ended {s.ends}")
    for c in ledger.acknowledged_checkouts():
        s = observed.sagas.get(c.order_id or "")
        if s is not None and s.ends[:1] != ["placed"]:
            check.problems.append(f"{_checkout(c)} was acknowledged, its saga ended {s.ends}")
    ends = Counter(s.ends[0] if s.ends else "none" for s in observed.sagas.values())
    kinds = Counter("checkout" if s.place else "billing" for s in observed.sagas.values())
    check.note = f"{len(observed.sagas)} sagas ({dict(kinds)}), ended {dict(ends)}"
    return check


def _logged_write(
    observed: Observed,
    rec: RecordedEvent,
    kind: str,
    subject: str,
    detail: dict[str, str] | None = None,
) -> None:
    observed.writes_in_log.setdefault(rec.correlation, []).append(
        LoggedWrite(kind, subject, f"p{rec.partition}/{rec.entry_id}", rec.id, detail or {})
    )


async def _scan_for_forgotten(system: System, ledger: Ledger, observed: Observed) -> None:
    """Every Redis key and value of the run, the archive, every MongoDB collection and a
    ``pg_dump`` of the run's database, searched for each forgotten account's email and name."""
    forgotten = ledger.forgotten()
    if not forgotten:
        return
    redis = system.redis()
    try:
        dumps = {
            "redis": await redis_dump(redis, system.prefix),
            "archive": await archive_dump_of(redis, system.settings.redis.keys.archive()),
        }
    finally:
        await redis.aclose()
    dumps["mongo"] = await mongo_dump(system.env["MONGO_URL"], system.env["MONGO_DB"])
    dumps["pg_dump"] = await asyncio.to_thread(pg_dump, system.pg_direct)
    for account_id in forgotten:
        email, name = ledger.people[account_id]
        person = {"email": email, "name": name}
        found = [
            f"{where}: {what}" for where, dump in dumps.items() for what in leaks(dump, person)
        ]
        if found:
            observed.leaks[account_id] = found


async def _archive(store: EventStore, observed: Observed) -> None:
    """How the log is split between Redis and the archive, from both sides."""
    for p in range(store.keys.partitions):
        try:
            info = await store.redis.xinfo_stream(store.keys.log(p))
        except aioredis.ResponseError:  # nothing was ever appended to it
            continue
        observed.entries_added[p] = int(info["entries-added"])
        observed.live_entries[p] = int(info["length"])
    observed.archive_markers = await store.archived()
    if await store.redis.get(store.keys.archive()) is None:
        return
    archive = await store.archive()
    await asyncio.to_thread(archive.reload)
    listed: set[str] = set()
    for p in range(store.keys.partitions):
        segments = archive.partition(p).get("segments") or []
        observed.archive_segments[p] = [(s["first"], s["last"], s["rows"]) for s in segments]
        listed |= {s["path"] for s in segments}
    files = await asyncio.to_thread(archive.root.files, "")
    observed.archive_leftovers = sorted(f for f in files if f != MANIFEST and f not in listed)


async def _read_models(system: System, ledger: Ledger, observed: Observed) -> None:
    names = mongo_collections(observed.versions["read_models"])
    client: AsyncMongoClient[Any] = AsyncMongoClient(system.env["MONGO_URL"])
    try:
        db = client[system.env["MONGO_DB"]]
        for pid in ledger.products:
            doc = await db[names.products].find_one({"_id": pid})
            observed.rm_stock[pid] = None if doc is None else doc.get("stock")
            observed.rm_reserved[pid] = None if doc is None else doc.get("reserved", 0)
        async for doc in db[names.orders].find({}):
            observed.rm_orders[str(doc["_id"])] = doc
        accounts = [c.account_id for c in ledger.customers + ledger.shoppers + ledger.forgettable]
        accounts += [w.result_id for w in ledger.acknowledged_writes("signup") if w.result_id]
        for account_id in accounts:
            doc = await db[names.accounts].find_one({"_id": account_id})
            observed.rm_accounts[account_id] = doc or {}
    finally:
        await client.close()


async def _postgres(system: System, observed: Observed) -> None:
    conn = await asyncpg.connect(system.pg_direct)
    try:
        dw = pg_schema("warehouse", observed.versions["warehouse"])
        for row in await conn.fetch(
            f'SELECT order_id, line_no, product_id, quantity FROM "{dw}".fact_order_line'
        ):
            observed.dw_lines.setdefault(row["order_id"], []).append(
                (row["line_no"], row["product_id"], row["quantity"])
            )
        audit = pg_schema("audit", observed.versions["audit"])
        for row in await conn.fetch(
            f'SELECT event_id, count(*) AS n FROM "{audit}".events GROUP BY event_id'
        ):
            observed.audit_rows[row["event_id"]] = row["n"]
    finally:
        await conn.close()


# -- judging -------------------------------------------------------------------------------


def _order(o: Any) -> str:
    return f"order {o.key} (order_id {o.order_id}, account {o.account_id}, lines {o.lines})"


def check_caught_up(observed: Observed, timeout_s: float) -> Check:
    check = Check("projector caught up")
    if observed.caught_up_s is None:
        check.problems = [f"not within {timeout_s:.0f}s: {b}" for b in observed.behind]
    else:
        check.note = f"in {observed.caught_up_s}s after the load stopped"
    return check


def check_log(ledger: Ledger, observed: Observed) -> tuple[Check, int, int]:
    """Every acknowledged order and restock is in the log exactly once; nothing else is.

    Returns the check, the number lost and the number duplicated.
    """
    check = Check("log: every acknowledged order exactly once")
    by_key: dict[str, list[LoggedOrder]] = defaultdict(list)
    for logged in observed.orders_in_log:
        by_key[logged.correlation].append(logged)
    lost = duplicated = 0
    for o in ledger.orders:
        found = by_key.pop(o.key, [])
        if o.acknowledged:
            if not found:
                lost += 1
                check.problems.append(f"LOST: {_order(o)} got {o.status} but is not in the log")
                continue
            if len(found) > 1:
                duplicated += len(found) - 1
                entries = ", ".join(f"{f.order_id}@{f.entry}" for f in found)
                check.problems.append(
                    f"DUPLICATED: {_order(o)} is in the log {len(found)} times: {entries}"
                )
            first = found[0]
            if first.order_id != o.order_id:
                check.problems.append(
                    f"{_order(o)}: the log's order_id is {first.order_id}, the client was told {o.order_id}"
                )
            if sorted(first.lines) != sorted(o.lines):
                check.problems.append(f"{_order(o)}: the log has lines {first.lines}")
        elif found:
            what = "was never answered" if o.status is None else f"was refused with {o.status}"
            check.problems.append(
                f"PHANTOM: {_order(o)} {what} but is in the log ({found[0].order_id}@{found[0].entry})"
            )
    for key, found in by_key.items():
        check.problems.append(
            f"UNKNOWN: the log has {len(found)} order(s) with correlation {key!r}"
        )
    for r in ledger.restocks:
        n = observed.restocks_in_log.get(r.event_id, 0)
        if n == 0:
            lost += 1
            check.problems.append(
                f"LOST: restock {r.event_id} (+{r.delta} {r.product_id}) acknowledged by Redis, not in the log"
            )
        elif n > 1:
            duplicated += n - 1
            check.problems.append(f"DUPLICATED: restock {r.event_id} is in the log {n} times")
    return check, lost, duplicated


def outcomes(observed: Observed) -> dict[str, str]:
    """Checkout order id → ``paid`` / ``expired`` / ``awaiting_payment`` as the log has it."""
    out: dict[str, str] = {}
    for placed in observed.placed_in_log:
        oid = placed.order_id
        out[oid] = (
            "paid"
            if observed.paid_in_log.get(oid)
            else "expired"
            if observed.expired_in_log.get(oid)
            else "awaiting_payment"
        )
    return out


def _lifecycle_units(observed: Observed) -> tuple[dict[str, int], dict[str, int]]:
    """Product → units of checkouts the log has paid, and of those still reserved."""
    paid: Counter[str] = Counter()
    held: Counter[str] = Counter()
    status = outcomes(observed)
    seen: set[str] = set()
    for placed in observed.placed_in_log:
        if placed.order_id in seen:
            continue  # a duplicated checkout is the log check's finding
        seen.add(placed.order_id)
        target = {"paid": paid, "awaiting_payment": held}.get(status[placed.order_id])
        for pid, q in placed.lines if target is not None else ():
            target[pid] += q
    return dict(paid), dict(held)


STOCK_CHECK = (
    "stock and reserved: write side and read models = "
    "initial + restocks + stock deltas - bill-now - paid - still reserved"
)


def check_stock(ledger: Ledger, observed: Observed) -> Check:
    """Write side and read models: ``stock`` = initial + restocks + acknowledged stock
    deltas - bill-now orders - paid checkouts - still reserved checkouts; ``reserved`` =
    still reserved (paid and expired as the log has them: the payment check holds the log
    to what the clients were told). A delta applied twice, or lost, shows here in every
    view that holds stock."""
    check = Check(STOCK_CHECK)
    paid, held = _lifecycle_units(observed)
    expected, sold = ledger.expected_stock(paid, held), ledger.sold()
    added, moved = ledger.restocked(), ledger.adjusted()
    for pid, want in expected.items():
        p = ledger.products[pid]
        why = (
            f"initial {p.initial_stock} + restocked {added[pid]} + adjusted {moved[pid]}"
            f" - bill-now {sold[pid]} - paid {paid.get(pid, 0)} - reserved {held.get(pid, 0)}"
        )
        for where, have, field_, value in (
            ("write side (Redis state)", observed.write_stock.get(pid), "stock", want),
            ("read_models products", observed.rm_stock.get(pid), "stock", want),
            (
                "write side (Redis state)",
                observed.write_reserved.get(pid),
                "reserved",
                held.get(pid, 0),
            ),
            ("read_models products", observed.rm_reserved.get(pid), "reserved", held.get(pid, 0)),
        ):
            if have != value:
                check.problems.append(
                    f"{where} product {pid} ({p.sku}) field {field_}: {have}, expected {value} ({why})"
                )
    return check


def _checkout(c: Checkout) -> str:
    return f"checkout {c.key} (order_id {c.order_id}, account {c.account_id}, lines {c.lines})"


def check_checkouts_log(ledger: Ledger, observed: Observed) -> tuple[Check, int, int]:
    """Every acknowledged checkout's ``OrderPlaced`` is in the log exactly once (by its
    Idempotency-Key), with the order id and lines the client was told; nothing else is."""
    check = Check("log: every acknowledged checkout exactly once")
    by_key: dict[str, list[LoggedOrder]] = defaultdict(list)
    for logged in observed.placed_in_log:
        by_key[logged.correlation].append(logged)
    lost = duplicated = 0
    for c in ledger.checkouts:
        found = by_key.pop(c.key, [])
        if c.acknowledged:
            if not found:
                lost += 1
                check.problems.append(f"LOST: {_checkout(c)} got {c.status} but is not in the log")
                continue
            if len(found) > 1:
                duplicated += len(found) - 1
                entries = ", ".join(f"{f.order_id}@{f.entry}" for f in found)
                check.problems.append(
                    f"DUPLICATED: {_checkout(c)} is in the log {len(found)} times: {entries}"
                )
            if found[0].order_id != c.order_id:
                check.problems.append(
                    f"{_checkout(c)}: the log's order_id is {found[0].order_id}, the client was told {c.order_id}"
                )
            if sorted(found[0].lines) != sorted(c.lines):
                check.problems.append(f"{_checkout(c)}: the log has lines {found[0].lines}")
        elif found:
            what = "was never answered" if c.status is None else f"was refused with {c.status}"
            check.problems.append(
                f"PHANTOM: {_checkout(c)} {what} but is in the log ({found[0].order_id}@{found[0].entry})"
            )
    for key, found in by_key.items():
        check.problems.append(
            f"UNKNOWN: the log has {len(found)} checkout(s) with correlation {key!r}"
        )
    return check, lost, duplicated


PAYMENT_CHECK = (
    "payments: told paid = paid exactly once, never charged twice; unpaid checkouts expired once"
)


def check_payments(ledger: Ledger, observed: Observed, ttl_s: int) -> Check:
    """Per acknowledged checkout: at most one ``OrderPaid`` and one ``OrderExpired``, never
    both. A 200 (or a retry's 409 *paid*) → paid exactly once. Left unpaid, or a definite
    409 *expired* → expired exactly once. A payment without a definite answer → one of them.
    No ``OrderPaid`` / ``OrderExpired`` for an order no checkout was acknowledged for."""
    check = Check(PAYMENT_CHECK)
    ours = {c.order_id for c in ledger.acknowledged_checkouts()}
    for c in ledger.acknowledged_checkouts():
        oid = c.order_id or ""
        paid = observed.paid_in_log.get(oid, [])
        expired = observed.expired_in_log.get(oid, [])
        told_paid = c.pay_status == 200 or (c.pay_status == 409 and c.pay_current == "paid")
        told_expired = c.pay_status == 409 and c.pay_current == "expired"
        if len(paid) > 1:
            check.problems.append(
                f"CHARGED TWICE: {_checkout(c)} has {len(paid)} OrderPaid: "
                + ", ".join(f"{pay_id}@{entry}" for pay_id, _, entry in paid)
            )
        if len(expired) > 1:
            check.problems.append(f"{_checkout(c)} expired {len(expired)} times: {expired}")
        if paid and expired:
            check.problems.append(
                f"{_checkout(c)} is both paid ({paid[0][2]}) and expired ({expired[0][1]})"
            )
        if told_paid and not paid:
            check.problems.append(
                f"LOST PAYMENT: {_checkout(c)} was told paid ({c.pay_status}) but has no OrderPaid"
            )
        if told_paid and expired:
            check.problems.append(
                f"{_checkout(c)} was told paid ({c.pay_status}) but expired ({expired[0][1]})"
            )
        if (not c.pay or told_expired) and paid:
            check.problems.append(
                f"PHANTOM PAYMENT: {_checkout(c)} "
                f"{'was never paid for' if not c.pay else 'was told expired'} but is paid ({paid[0][2]})"
            )
        if (not c.pay or told_expired) and not expired:
            check.problems.append(
                f"NOT EXPIRED: {_checkout(c)} unpaid, reserved until {c.reserved_until} "
                f"(TTL {ttl_s}s), has no OrderExpired"
            )
        if c.pay and c.pay_status is None and not paid and not expired:
            check.problems.append(
                f"{_checkout(c)}: payment unanswered, and neither paid nor expired"
            )
        if c.pay_status not in (None, 200, 409):
            check.problems.append(
                f"{_checkout(c)}: the payment was answered {c.pay_status} {c.answer[:120]}"
            )
    for oid in sorted(set(observed.paid_in_log) | set(observed.expired_in_log)):
        if oid not in ours:
            check.problems.append(
                f"order {oid} is paid or expired in the log, but no checkout was acknowledged for it"
            )
    paid_n = sum(
        1 for c in ledger.acknowledged_checkouts() if observed.paid_in_log.get(c.order_id or "")
    )
    check.note = f"{paid_n} paid, {sum(1 for c in ledger.acknowledged_checkouts() if observed.expired_in_log.get(c.order_id or ''))} expired"
    return check


def _where(observed: Observed) -> dict[str, str]:
    """Idempotency key → the order's log entry."""
    return {lo.correlation: lo.entry for lo in observed.orders_in_log}


def check_read_models(ledger: Ledger, observed: Observed) -> Check:
    """Every acknowledged order's document, and each account's counters, match the ledger."""
    check = Check("read_models: orders and account counters = acknowledged orders")
    where = _where(observed)
    acked = ledger.acknowledged()
    count: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    for o in acked:
        count[o.account_id] += 1
        spent[o.account_id] += o.total or 0
        doc = observed.rm_orders.get(o.order_id or "")
        if doc is None:
            check.problems.append(
                f"read_models orders: {_order(o)} is missing (log entry {where.get(o.key)})"
            )
            continue
        lines = sorted((ln["product_id"], ln["quantity"]) for ln in doc.get("lines", []))
        if lines != sorted(o.lines):
            check.problems.append(
                f"read_models orders {o.order_id} field lines: {lines}, expected {sorted(o.lines)}"
            )
    status = outcomes(observed)
    placed = {lo.order_id: lo for lo in observed.placed_in_log}
    for c in ledger.acknowledged_checkouts():
        doc = observed.rm_orders.get(c.order_id or "")
        if doc is None:
            lo = placed.get(c.order_id or "")
            check.problems.append(
                f"read_models orders: {_checkout(c)} is missing (log entry {lo and lo.entry})"
            )
            continue
        lines = sorted((ln["product_id"], ln["quantity"]) for ln in doc.get("lines", []))
        if lines != sorted(c.lines):
            check.problems.append(
                f"read_models orders {c.order_id} field lines: {lines}, expected {sorted(c.lines)}"
            )
        want = status.get(c.order_id or "")
        if want is not None and doc.get("status") != want:
            check.problems.append(
                f"read_models orders {c.order_id} field status: {doc.get('status')!r}, "
                f"expected {want!r} (as the log has it)"
            )
        if want == "paid":
            count[c.account_id] += 1
            spent[c.account_id] += c.total or 0
    ours = {o.order_id for o in acked} | {c.order_id for c in ledger.acknowledged_checkouts()}
    for order_id in sorted(set(observed.rm_orders) - ours):
        check.problems.append(f"read_models orders {order_id}: no acknowledged order has this id")
    for c in ledger.customers + ledger.shoppers + ledger.forgettable:
        doc = observed.rm_accounts.get(c.account_id, {})
        for name, want in (
            ("orders_count", count[c.account_id]),
            ("total_spent", spent[c.account_id]),
        ):
            if doc.get(name, 0) != want:
                check.problems.append(
                    f"read_models accounts {c.account_id} field {name}: {doc.get(name)}, expected {want}"
                )
    return check


def check_warehouse(ledger: Ledger, observed: Observed) -> Check:
    """``fact_order_line``: each acknowledged order's lines once; units sold per product."""
    check = Check("warehouse: order lines and units sold = acknowledged orders")
    where = _where(observed)
    acked = ledger.acknowledged()
    for o in acked:
        rows = observed.dw_lines.get(o.order_id or "")
        if not rows:
            check.problems.append(
                f"warehouse fact_order_line: {_order(o)} has no rows (log entry {where.get(o.key)})"
            )
            continue
        have = sorted((pid, q) for _, pid, q in rows)
        if have != sorted(o.lines):
            check.problems.append(
                f"warehouse fact_order_line {o.order_id} lines: {have}, expected {sorted(o.lines)}"
            )
    status = outcomes(observed)
    paid = [c for c in ledger.acknowledged_checkouts() if status.get(c.order_id or "") == "paid"]
    for c in paid:
        rows = observed.dw_lines.get(c.order_id or "")
        have = sorted((pid, q) for _, pid, q in rows or [])
        if have != sorted(c.lines):
            check.problems.append(
                f"warehouse fact_order_line {_checkout(c)} (paid): {have}, expected {sorted(c.lines)}"
            )
    ours = {o.order_id for o in acked} | {c.order_id for c in paid}
    extra = sorted(set(observed.dw_lines) - ours)
    for order_id in extra:
        check.problems.append(
            f"warehouse fact_order_line {order_id}: no acknowledged order has this id"
        )
    sold = ledger.sold()
    for c in paid:
        for pid, q in c.lines:
            sold[pid] += q
    units: Counter[str] = Counter()
    for rows in observed.dw_lines.values():
        for _, pid, q in rows:
            units[pid] += q
    for pid, want in sold.items():
        if units[pid] != want:
            p = ledger.products[pid]
            check.problems.append(
                f"warehouse product {pid} ({p.sku}) units sold: {units[pid]}, expected {want} "
                f"(so stock {p.initial_stock} - {units[pid]} instead of {p.initial_stock} - {want})"
            )
    return check


def check_audit_rows(ledger: Ledger, observed: Observed) -> Check:
    """The audit log holds each acknowledged order's and restock's event exactly once."""
    check = Check("audit: one row per acknowledged event")
    event_of = {lo.correlation: lo.event_id for lo in observed.orders_in_log}
    for o in ledger.acknowledged():
        event_id = event_of.get(o.key)
        if event_id is None:
            continue  # not in the log: the log check reports it
        n = observed.audit_rows.get(event_id, 0)
        if n != 1:
            check.problems.append(f"audit events: {_order(o)} event {event_id} has {n} rows")
    for r in ledger.restocks:
        n = observed.audit_rows.get(r.event_id, 0)
        if observed.restocks_in_log.get(r.event_id) and n != 1:
            check.problems.append(f"audit events: restock {r.event_id} has {n} rows")
    for d in ledger.acknowledged_deltas():
        for logged in observed.deltas_in_log.get(d.key, []):
            n = observed.audit_rows.get(logged.event_id, 0)
            if n != 1:
                check.problems.append(
                    f"audit events: {_delta(d)} event {logged.event_id} has {n} rows"
                )
    lifecycle = [(f"OrderPlaced of {lo.order_id}", lo.event_id) for lo in observed.placed_in_log]
    for oid, rows in observed.paid_in_log.items():
        lifecycle += [(f"OrderPaid of {oid}", event_id) for _, event_id, _ in rows]
    for oid, expired in observed.expired_in_log.items():
        lifecycle += [(f"OrderExpired of {oid}", event_id) for event_id, _ in expired]
    for what, event_id in lifecycle:
        n = observed.audit_rows.get(event_id, 0)
        if n != 1:
            check.problems.append(f"audit events: {what} event {event_id} has {n} rows")
    return check


def check_verify(observed: Observed, view: str) -> Check:
    check = Check(f"streamshop verify {view}")
    code, out = observed.verify[view]
    if code != 0:
        lines = [ln for ln in out.strip().splitlines() if ln.strip()]
        check.problems = [f"exit {code}", *lines[-15:]]
    else:
        check.note = out.strip().splitlines()[-1][:200] if out.strip() else ""
    return check


def check_audit_verify(observed: Observed) -> Check:
    check = Check("streamshop audit verify")
    code, out = observed.audit_verify
    if code != 0:
        check.problems = [f"exit {code}", *out.strip().splitlines()[-15:]]
    else:
        check.note = out.strip()[:200]
    return check


def check_dead_letters(observed: Observed) -> Check:
    """``streamshop dlq list`` shows nothing and every ``{prefix}:dlq:*`` stream is empty."""
    check = Check("no dead letter left")
    for key, n in sorted(observed.dlq_streams.items()):
        if n:
            check.problems.append(f"DLQ stream {key} holds {n} entries")
    code, out = observed.dlq_list
    if code != 0:
        check.problems.append(f"streamshop dlq list exit {code}: {out.strip()[-300:]}")
    for line in out.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        check.problems.append(
            f"dead letter {row.get('projection')} {row.get('entry_id')} {row.get('type')} "
            f"p{row.get('partition')} after {row.get('attempts')} attempts: {row.get('error')}"
        )
    return check


WRITES_CHECK = "log: every acknowledged category, seller, product, forget and sign-up exactly once"
FORGET_CHECK = (
    "forgotten customers: forgotten in the read models, their orders kept, "
    "their email and name nowhere in Redis, the archive, MongoDB or pg_dump"
)


def _told(status: int | None, problem: str) -> str:
    """What a request was last answered, for a finding: ``no answer``, or the status and
    its problem type."""
    return "no answer" if status is None else f"{status}{problem and ' ' + problem}"


def _write(w: Write) -> str:
    told = _told(w.status, w.problem)
    keyed = ", keyed" if w.keyed else ""
    return f"{w.kind} {w.subject} (request {w.key}{keyed}, {w.attempts} attempt(s), told {told})"


def _names_entry(position: str, entry: str) -> bool:
    """Whether an answer's ``position`` names exactly ``entry`` (``p<partition>/<id>``), the
    one event its append wrote."""
    try:
        named = parse_position(position)
    except InvalidPosition:
        return False
    return [f"p{p}/{e}" for p, e in named.items()] == [entry]


def _same_answer(what: str, lost: str | None, answer: str) -> list[str]:
    """A keyed request whose 2xx was lost on purpose: its retry must hear the same bytes."""
    if lost is None or lost == answer:
        return []
    return [
        f"ANSWER CHANGED: {what}: the answer lost was {lost[:200]!r}, the retry heard "
        f"{answer[:200]!r}"
    ]


def check_writes(ledger: Ledger, observed: Observed) -> tuple[Check, int, int]:
    """Each acknowledged write (a 2xx, or for an unkeyed one "already done" heard by a
    retry after an attempt without an answer) has exactly one event, under its own request
    id, carrying what was asked; a refused one has none (and is a finding: every write of
    the load is valid; for a keyed one, "already done" is a retry that did not replay); one
    never answered has at most one. A keyed write's answer is the first's: the position it
    names is its event's entry, the product id the log's, and an answer lost on purpose is
    heard again byte for byte. No slug or SKU is created twice, and no other request of the
    load appended any."""
    check = Check(WRITES_CHECK)
    lost = duplicated = 0
    by_key = {k: list(v) for k, v in observed.writes_in_log.items()}
    for w in ledger.writes:
        found = [f for f in by_key.pop(w.key, []) if f.kind == w.kind]
        if len(found) > 1:
            duplicated += len(found) - 1
            entries = ", ".join(f.entry for f in found)
            check.problems.append(
                f"DUPLICATED: {_write(w)} is in the log {len(found)} times: {entries}"
            )
        if w.acknowledged:
            if not found:
                lost += 1
                check.problems.append(f"LOST: {_write(w)} is not in the log")
                continue
            logged = found[0]
            want = w.result_id if w.kind in ("seller", "signup") else w.subject
            if want is not None and logged.subject != want:
                check.problems.append(f"{_write(w)}: the log has {logged.subject}")
            for name, value in w.detail.items():
                if value and logged.detail.get(name) != value:
                    check.problems.append(
                        f"{_write(w)} field {name}: the log has {logged.detail.get(name)!r}, "
                        f"expected {value!r}"
                    )
            if w.keyed and not _names_entry(w.position, logged.entry):
                check.problems.append(
                    f"{_write(w)} answered position {w.position!r}, its event is at {logged.entry}"
                )
            if w.keyed:
                check.problems += _same_answer(_write(w), w.lost_answer, w.answer)
        elif w.status is not None:
            replayed = w.keyed and w.problem == ALREADY_DONE[w.kind]
            check.problems.append(
                f"NOT REPLAYED: {_write(w)}: a retry with its Idempotency-Key must get the "
                "first answer"
                if replayed
                else f"REFUSED: {_write(w)}"
            )
            if found:
                check.problems.append(
                    f"PHANTOM: {_write(w)} was refused but is in the log ({found[0].entry})"
                )
    for key, found in sorted(by_key.items()):
        if key.startswith("w-"):
            check.problems.append(
                f"UNKNOWN: the log has {[f.entry for f in found]} under request {key!r}"
            )
    for account_id, n in sorted(observed.forgets_in_log.items()):
        if n > 1:
            check.problems.append(
                f"DUPLICATED: account {account_id} is forgotten {n} times in the log"
            )
    created = Counter(
        (f.kind, f.subject)
        for found in observed.writes_in_log.values()
        for f in found
        if f.kind in ("category", "product")
    )
    for (kind, subject), n in sorted(created.items()):
        if n > 1:
            check.problems.append(f"DUPLICATED: the log creates {kind} {subject} {n} times")
    kinds = Counter(w.kind for w in ledger.writes if w.acknowledged)
    keyed = sum(1 for w in ledger.writes if w.acknowledged and w.keyed)
    replays = sum(1 for w in ledger.writes if w.acknowledged and w.keyed and w.lost_answer)
    check.note = (
        ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + f" acknowledged ({keyed} keyed; {replays} answers lost and heard again)"
    )
    return check, lost, duplicated


STOCK_DELTA_CHECK = (
    "log: every acknowledged stock delta exactly once, where its answer said, heard again alike"
)


def _delta(d: StockDelta) -> str:
    told = _told(d.status, d.problem)
    return (
        f"stock delta {d.key} ({d.delta:+d} {d.product_id} by the {d.actor}, "
        f"{d.attempts} attempt(s), told {told})"
    )


def check_stock_deltas(ledger: Ledger, observed: Observed) -> tuple[Check, int, int]:
    """Each acknowledged ``POST /products/{id}/stock`` has exactly one ``StockAdjusted``
    under its Idempotency-Key, of its product and delta, at the entry the position in its
    answer names; an answer lost on purpose is heard again byte for byte. One refused as
    below zero (409 ``insufficient-stock``) or never answered has none; any other refusal
    is a finding (every delta of the load is valid). One sent beyond any stock the product
    can hold must be refused so (:func:`_beyond_refused`), and is never in the log. No other
    key of the load moved stock. (The stock check then holds every view to the acknowledged
    deltas, and so to the refused ones moving nothing.)"""
    check = Check(STOCK_DELTA_CHECK)
    lost = duplicated = 0
    by_key = {k: list(v) for k, v in observed.deltas_in_log.items()}
    for d in ledger.stock_deltas:
        found = by_key.pop(d.key, [])
        if len(found) > 1:
            duplicated += len(found) - 1
            entries = ", ".join(f.entry for f in found)
            check.problems.append(
                f"DUPLICATED: {_delta(d)} is in the log {len(found)} times: {entries}"
            )
        if d.beyond:
            check.problems += _beyond_refused(d)
            if found:
                check.problems.append(
                    f"PHANTOM: {_delta(d)} asked for more than the product can hold but is in "
                    f"the log ({found[0].entry})"
                )
            continue
        if d.acknowledged:
            if not found:
                lost += 1
                check.problems.append(f"LOST: {_delta(d)} is not in the log")
                continue
            logged = found[0]
            if (logged.product_id, logged.delta) != (d.product_id, d.delta):
                check.problems.append(
                    f"{_delta(d)}: the log has {logged.delta:+d} {logged.product_id}"
                )
            if not _names_entry(d.position, logged.entry):
                check.problems.append(
                    f"{_delta(d)} answered position {d.position!r}, its event is at {logged.entry}"
                )
            check.problems += _same_answer(_delta(d), d.lost_answer, d.answer)
            continue
        if d.status is not None and not d.refused:
            check.problems.append(f"REFUSED: {_delta(d)}: {d.answer[:160]}")
        if found:
            what = "was never answered" if d.status is None else "was refused"
            check.problems.append(
                f"PHANTOM: {_delta(d)} {what} but is in the log ({found[0].entry})"
            )
    for key, found in sorted(by_key.items()):
        if key.startswith("w-"):
            check.problems.append(
                f"UNKNOWN: the log has {[f.entry for f in found]} under request {key!r}"
            )
    acked = ledger.acknowledged_deltas()
    beyond = [d for d in ledger.stock_deltas if d.beyond]
    check.note = (
        f"{len(acked)} acknowledged ({sum(d.delta < 0 for d in acked)} down), "
        f"{sum(d.refused for d in ledger.stock_deltas)} refused as below zero "
        f"({sum(d.refused for d in beyond)} of the {len(beyond)} sent beyond the stock), "
        f"{sum(d.attempts > 1 for d in acked)} retried, "
        f"{sum(d.lost_answer is not None for d in acked)} answers lost and heard again"
    )
    return check, lost, duplicated


def _beyond_refused(d: StockDelta) -> list[str]:
    """A delta sent beyond the stock: answered 409 ``insufficient-stock`` as problem+json
    naming the ``delta`` and how much is in stock, or not answered at all."""
    if d.status is None:
        return []
    if not d.refused:
        return [
            f"NOT REFUSED: {_delta(d)} asked for more than the product can hold: {d.answer[:160]}"
        ]
    body = _problem_body(d.answer)
    if body.get("field") != "delta" or "in stock" not in str(body.get("detail", "")):
        return [f"{_delta(d)}: the refusal names no delta and stock: {d.answer[:160]}"]
    return []


def _problem_body(answer: str) -> dict[str, Any]:
    """The JSON object of an answer as :func:`~tests.faults.load.heard` keeps it (``{}`` if
    it has none)."""
    try:
        body = json.loads(answer.partition(" ")[2])
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


SIGNUP_CHECK = "sign-ups: every acknowledged one logs in as its account and is in the read models"


def check_signups(ledger: Ledger, observed: Observed) -> Check:
    """Each acknowledged sign-up (keyed, under the faults; the writes check holds it to one
    ``AccountCreated`` under its request id, of the account id its answer named) logs in,
    after the load, as that account; and its read-model account has its email and the
    customer role (a login alone leaves a stub without them)."""
    check = Check(SIGNUP_CHECK)
    logged_in = {c.email: c.account_id for c in ledger.newcomers}
    signups = ledger.acknowledged_writes("signup")
    for w in signups:
        account_id = logged_in.get(w.subject)
        if account_id is None:
            heard = ledger.refused_logins.get(w.subject, "never tried")
            check.problems.append(f"CANNOT LOG IN: {_write(w)}: the login heard {heard[:160]}")
        elif account_id != w.result_id:
            check.problems.append(
                f"{_write(w)} answered account {w.result_id}, its login is account {account_id}"
            )
        doc = observed.rm_accounts.get(w.result_id or "") or {}
        for name, want in (("email", w.subject), ("role", "customer")):
            if doc.get(name) != want:
                check.problems.append(
                    f"read_models accounts {w.result_id} field {name}: {doc.get(name)!r}, "
                    f"expected {want!r} ({_write(w)})"
                )
    check.note = f"{len(signups)} acknowledged, {len(ledger.newcomers)} logged in"
    return check


REUSE_CHECK = (
    "reused Idempotency-Keys: refused 422 idempotency-key-reused naming Idempotency-Key, "
    "nothing appended"
)


def _reuse(r: Reuse) -> str:
    told = _told(r.status, r.problem)
    return (
        f"{r.kind} {r.request_id} (the key of {r.key}, {r.change}, {r.attempts} attempt(s), "
        f"told {told})"
    )


def check_reuses(ledger: Ledger, observed: Observed) -> Check:
    """Each request that reused an earlier one's Idempotency-Key for another body was
    answered 422 ``idempotency-key-reused``, as problem+json naming ``Idempotency-Key`` (a
    200 is the first answer replayed to another request), or not at all; and no event of
    any type carries its request id. (A stock delta applied anyway shows in the stock
    check too.)"""
    check = Check(REUSE_CHECK)
    for r in ledger.reuses:
        if r.status is not None and not r.refused:
            check.problems.append(
                f"NOT REFUSED: {_reuse(r)} as {r.media_type or 'no body'} naming "
                f"{r.at_fault or 'no field'}: {r.answer[:160]}"
            )
        appended = observed.appended_by.get(r.request_id, [])
        if appended:
            check.problems.append(f"APPENDED: {_reuse(r)}: the log has {appended[:5]}")
    refused = Counter(r.kind for r in ledger.reuses if r.refused)
    check.note = ", ".join(f"{n} {k}" for k, n in sorted(refused.items())) + " refused"
    return check


def check_forgotten(ledger: Ledger, observed: Observed) -> Check:
    """Each customer whose forget was acknowledged: its read-model account says forgotten
    with no email or name; its acknowledged orders are in the warehouse still; its email
    and name are found in none of the stores. And forgets happened, of customers who had
    ordered (else this proves nothing)."""
    check = Check(FORGET_CHECK)
    forgotten = ledger.forgotten()
    if not forgotten:
        check.problems.append("no forget was acknowledged")
    kept = 0
    for account_id in forgotten:
        doc = observed.rm_accounts.get(account_id) or {}
        for name, want in (("forgotten", True), ("email", ""), ("name", "")):
            if doc.get(name) != want:
                check.problems.append(
                    f"read_models accounts {account_id} field {name}: {doc.get(name)!r}, "
                    f"expected {want!r}"
                )
        orders = [o for o in ledger.acknowledged() if o.account_id == account_id]
        if not orders:
            check.problems.append(f"forgotten account {account_id} had no acknowledged order")
        for o in orders:
            if observed.dw_lines.get(o.order_id or ""):
                kept += 1
            else:
                check.problems.append(
                    f"warehouse fact_order_line: {_order(o)} of forgotten account {account_id} "
                    "is gone"
                )
        for where in observed.leaks.get(account_id, []):
            check.problems.append(
                f"LEAK: forgotten account {account_id}'s {where.split(': ')[1]} "
                f"is in clear in {where.split(': ')[0]}"
            )
    check.note = f"{len(forgotten)} forgotten, {kept} of their orders kept in the warehouse"
    return check


ARCHIVE_CHECK = "archive: the log reads whole and once through archive + live"


def _archived_orders(observed: Observed) -> int:
    """Bill-now orders and checkouts whose log entry is at or below its partition's marker."""
    n = 0
    for lo in observed.orders_in_log + observed.placed_in_log:
        part, sep, entry = lo.entry.partition("/")
        if not sep:
            continue  # no partition named: not where the log reader put it
        marker = observed.archive_markers.get(int(part.removeprefix("p")))
        n += marker is not None and parse_stream_id(entry) <= parse_stream_id(marker)
    return n


def check_archive(ledger: Ledger, observed: Observed) -> Check:
    """``streamshop archive``, killed under the load and run again, lost and duplicated
    nothing: per partition the reader (archive + live) yields each entry once, in order, and
    exactly as many as Redis ever appended; the manifest's segments follow each other with
    no overlap and end at Redis's marker (every commit was trimmed); no interrupted run's
    file is left. And it is not vacuous: runs were killed, the last one completed, and
    acknowledged orders are among what was archived (the log checks then read them from
    the archive)."""
    check = Check(ARCHIVE_CHECK)
    runs = ledger.archive
    for p, ids in sorted(observed.log_ids.items()):
        keys = [parse_stream_id(e) for e in ids]
        for i in range(1, len(keys)):
            if keys[i] <= keys[i - 1]:
                what = "DUPLICATED" if keys[i] == keys[i - 1] else "OUT OF ORDER"
                check.problems.append(f"{what}: partition {p} reads {ids[i]} after {ids[i - 1]}")
    for p, added in sorted(observed.entries_added.items()):
        read = len(observed.log_ids.get(p, []))
        if read != added:
            check.problems.append(
                f"{'LOST' if read < added else 'DUPLICATED'}: partition {p} reads {read} entries "
                f"through archive + live, Redis appended {added} "
                f"({observed.live_entries.get(p)} still in Redis, "
                f"{sum(r for _, _, r in observed.archive_segments.get(p, []))} in the archive)"
            )
    for p, segments in sorted(observed.archive_segments.items()):
        for (_, before, _), (first, last, _) in pairwise(segments):
            if parse_stream_id(first) <= parse_stream_id(before):
                check.problems.append(
                    f"partition {p}: segment {first}..{last} overlaps the one ending at {before}"
                )
        marker = observed.archive_markers.get(p)
        if segments and marker != segments[-1][1]:
            check.problems.append(
                f"partition {p}: the archive ends at {segments[-1][1]}, Redis's marker is {marker}"
                " (committed, never trimmed)"
            )
    if observed.archive_leftovers:
        check.problems.append(
            f"files of an interrupted run left in the archive: {observed.archive_leftovers[:5]}"
        )
    if not runs.kills:
        check.problems.append("no archive run was killed (the faults missed the archive)")
    if runs.final != 0:
        check.problems.append(f"the archive run after the load did not complete: exit {runs.final}")
    archived = _archived_orders(observed)
    if not archived:
        check.problems.append("no acknowledged order was archived: the log checks read none")
    check.note = (
        f"{runs.runs} runs, {len(runs.kills)} killed, {runs.entries} entries archived; "
        f"{archived} acknowledged orders read from the archive"
    )
    return check


CLUSTER_SKIPS = frozenset({WRITES_CHECK, SIGNUP_CHECK, FORGET_CHECK, ARCHIVE_CHECK})
"""Checks of load the cluster run does not drive (categories, sign-ups, forgets, the
archive)."""


def judge(
    ledger: Ledger,
    observed: Observed,
    catch_up_s: float,
    ttl_s: int = 3,
    *,
    cluster: bool = False,
) -> tuple[list[Check], dict[str, int]]:
    """Every check of the run; on the cluster run without :data:`CLUSTER_SKIPS` and with
    :func:`check_sagas`."""
    log_check, lost, duplicated = check_log(ledger, observed)
    checkout_check, lost_c, duplicated_c = check_checkouts_log(ledger, observed)
    writes_check, lost_w, duplicated_w = check_writes(ledger, observed)
    deltas_check, lost_d, duplicated_d = check_stock_deltas(ledger, observed)
    status = outcomes(observed)
    checks = [
        check_caught_up(observed, catch_up_s),
        log_check,
        checkout_check,
        writes_check,
        check_signups(ledger, observed),
        deltas_check,
        check_reuses(ledger, observed),
        check_forgotten(ledger, observed),
        check_payments(ledger, observed, ttl_s),
        check_stock(ledger, observed),
        check_read_models(ledger, observed),
        check_warehouse(ledger, observed),
        check_audit_rows(ledger, observed),
        check_archive(ledger, observed),
        *(check_verify(observed, view) for view in (*VIEWS, "state")),
        check_audit_verify(observed),
        check_dead_letters(observed),
    ]
    if cluster:
        checks = [c for c in checks if c.name not in CLUSTER_SKIPS]
        checks.insert(checks.index(checkout_check) + 1, check_sagas(ledger, observed))
    return checks, {
        "lost": lost + lost_c + lost_w + lost_d,
        "duplicated": duplicated + duplicated_c + duplicated_w + duplicated_d,
        "paid": sum(1 for v in status.values() if v == "paid"),
        "expired": sum(1 for v in status.values() if v == "expired"),
        "archived_orders": _archived_orders(observed),
    }
