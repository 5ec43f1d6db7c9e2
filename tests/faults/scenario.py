"""One fault run: set the shop up, drive orders and restocks, inject the fault schedule, let
the projector catch up, check everything, write the figures.

The schedule is fixed (:data:`SCHEDULE`, in order) and every wait in it is bounded; the
load's randomness comes from one seed. What is not deterministic is the interleaving of
concurrent requests with the faults, which is the point.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.commands.runner import state_of
from events.positions import parse_stream_id
from events.states import OrderState
from events.store import EventStore
from tests.faults.archiving import archive_loop, final_archive
from tests.faults.checks import (
    Check,
    Checkpoints,
    Observed,
    judge,
    observe,
    sagas_settled,
    wait_caught_up,
)
from tests.faults.harness import ROOT, System
from tests.faults.load import Ledger, Shop


@dataclass(frozen=True)
class Size:
    """How big a run is; the defaults fit CI (well under 4 minutes on 2 cores)."""

    customers: int = 4
    clients_per_customer: int = 2
    products: int = 6
    stock: int = 5000
    order_pause_s: float = 0.05
    restock_every_s: float = 0.3
    stock_pause_s: float = 0.3
    """Between two stock deltas over HTTP (one client: the admin or a seller)."""
    stock_lose_every: int = 4
    """Every n-th stock delta loses its first answer on purpose and is asked again."""
    stock_beyond_every: int = 12
    """Every n-th stock delta is a decrease past any stock its product can hold (a 409)."""
    stock_reuse_every: int = 15
    """Every n-th stock request reuses an acknowledged delta's key for another (a 422)."""
    acks_between_faults: int = 40
    """Orders acknowledged after a recovery before the next fault (so each hits a load)."""
    max_wait_between_s: float = 10.0
    down_s: float = 1.0
    postgres_cut_s: float = 4.0
    order_deadline_s: float = 45.0
    resolve_deadline_s: float = 30.0
    catch_up_s: float = 45.0
    seed: int = 12
    shoppers: int = 2
    """Lifecycle customers (cart → checkout → payment), one client each."""
    unpaid_every: int = 3
    """Every n-th checkout is left unpaid, to expire."""
    shopper_pause_s: float = 0.25
    reservation_ttl_s: int = 3
    settle_s: float = 30.0
    """After the load: how long every checkout may take to end paid or expired."""
    forgettable: int = 3
    """Customers who order, then are forgotten by an admin during the load."""
    forget_orders_each: int = 2
    forget_pause_s: float = 5.0
    """Between two forgets (spreads them over the fault schedule)."""
    catalog_rounds: int = 2
    """Rounds of: categories, a seller, its products in them (during the load)."""
    catalog_categories: int = 2
    catalog_stock: int = 3000
    catalog_pause_s: float = 1.5
    signups: int = 8
    """New customers who sign up (keyed) during the load."""
    signup_pause_s: float = 5.0
    """Between two sign-ups (spreads them over the fault schedule)."""
    signup_lose_every: int = 2
    """Every n-th sign-up loses its first 201 on purpose and is asked again."""
    signup_reuse_every: int = 3
    """After every n-th acknowledged sign-up, its key is sent again for another email."""
    archive_keep: int = 200
    """``streamshop archive --keep``: newest entries per partition left in Redis."""
    archive_segment_rows: int = 40
    """``--segment-rows``: small, so a run writes many segments (many points to kill at)."""
    archive_every_s: float = 1.0
    archive_lock_ttl_s: float = 2.0
    """``--lock-ttl``: how long a killed run's lock keeps the next run out."""
    archive_deadline_s: float = 40.0
    """After the load: how long the last archive run may take to get through (refusals)."""
    cluster_acks_between_faults: int = 25
    """The cluster run's ``acks_between_faults`` (a shorter run: it adds to ``make faults``)."""
    cluster_catch_up_s: float = 90.0
    """The cluster run's bound on the projector catching up (two primaries restarted: every
    view re-feeds, on 2 cores shared with the single-node run's leftovers)."""
    saga_settle_s: float = 75.0
    """Cluster run, after the load: how long every saga may take to settle (a half-done one
    settles at its deadline, ``SAGA_TTL_SECONDS`` after it started, by the expiry worker)."""
    mongo_sync_on_commit: bool = False
    """Start the MongoDB server with ``--sync-on-commit`` (``make run`` does not): tells a
    loss from the server's durability apart from one in our runtime."""

    @classmethod
    def from_env(cls) -> Size:
        """``FAULTS_<FIELD>`` overrides a field (e.g. ``FAULTS_ACKS_BETWEEN_FAULTS=200``)."""
        base = cls()
        changes: dict[str, Any] = {}
        for name, value in asdict(base).items():
            raw = os.environ.get(f"FAULTS_{name.upper()}")
            if raw is not None:
                is_bool = isinstance(value, bool)
                changes[name] = raw.lower() in ("1", "true", "yes") if is_bool else type(value)(raw)
        return cls(**{**asdict(base), **changes})


SCHEDULE: tuple[tuple[str, str, str], ...] = (
    ("kill", "redis", "load"),
    ("kill", "api", "write"),
    ("kill", "mongo", "load"),
    ("kill", "mongo", "catch-up:read_models"),
    ("kill", "mongo", "catch-up:read_models"),
    ("kill", "api", "payment"),
    ("kill", "api", "stock"),
    ("kill", "projector", "load"),
    ("kill", "ingest", "load"),
    ("kill", "expire", "load"),
    ("cut", "postgres", "load"),
    ("terminate", "postgres", "catch-up:warehouse"),
)
"""(fault, target, when), in order. ``load``: once ``acks_between_faults`` more orders were
acknowledged since the last recovery. ``payment``: that, and then the moment a payment
request is in flight (so the kill lands between the acquirer's authorization and the
append, or on the answer, and the client's retry must not charge twice). ``write``: the
same for a category, seller, product or forget request (a keyed creation's retry must get
the first answer; an unkeyed one's must neither append twice nor be refused as if new).
``stock``: the same for a stock delta (its retry, same ``Idempotency-Key``, must move the
stock once). ``catch-up:<view>``: as soon as that view's
checkpoints move again after the previous fault, i.e. while the projector is writing the
backlog the outage left (a kill then lands in the middle of bulk writes, and the
PostgreSQL views have live sessions to terminate)."""


CLUSTER_SCHEDULE: tuple[tuple[str, str, str], ...] = (
    ("kill", "redis-1", "load"),
    ("kill", "api", "stock"),
    ("kill", "projector", "load"),
    ("kill", "redis-0", "load"),
)
"""The cluster run's faults: ``kill -9`` a primary (restarted from its AOF, same port,
directory and ``nodes.conf``), the API, the projector, then the primary every process was
given as ``REDIS_URL`` (a client must find the cluster through the others). The API is
killed while a stock delta is in flight (orders always are)."""


@dataclass
class Outcome:
    ledger: Ledger
    observed: Observed
    checks: dict[str, Check]
    figures: dict[str, Any]
    logs: Path
    service_tails: dict[str, str] = field(default_factory=dict)

    def check(self, name: str) -> Check:
        return self.checks[name]

    def summary(self) -> str:
        return "\n".join(c.report() for c in self.checks.values())


RESULTS = ROOT / ".data" / "faults"


async def _when(system: System, shop: Shop, when: str, size: Size) -> None:
    if when.startswith("catch-up:"):
        view = when.removeprefix("catch-up:")
        await _wait_for_progress(system, view, size.max_wait_between_s)
        return
    await _wait_for_acks(shop.ledger, size.acks_between_faults, size.max_wait_between_s)
    if when in ("payment", "write", "stock"):
        deadline = time.monotonic() + size.max_wait_between_s
        while shop.in_flight[when] == 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def _inject(
    system: System, shop: Shop, kind: str, target: str, when: str, size: Size
) -> None:
    if kind == "kill" and target == "mongo":
        await _kill_mongo(system, size, _when(system, shop, when, size))
        return
    await _when(system, shop, when, size)
    if kind == "kill":
        await system.kill_and_restart(target, size.down_s)
    elif kind == "cut":
        await system.cut_postgres(size.postgres_cut_s)
    elif kind == "terminate":
        await system.terminate_postgres_backends()
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


async def _kill_mongo(system: System, size: Size, when: Awaitable[None]) -> None:
    """``kill -9`` the MongoDB server, and tell whether it lost writes it had acknowledged.

    Two probes, neither involving our runtime: the read models' checkpoints read just
    before the kill (acknowledged and visible) must not be older after the restart; and a
    canary inserting numbered documents (default write concern, as the projector) right
    up to the kill must find every insert the server acknowledged. The fault's detail
    says what each found: a loss there is the server's durability, not our runtime.

    After ``when``, the kill waits for the next move of a read-model checkpoint and comes
    right after it: the projector's last acknowledged writes are then the newest ones, the
    ones a server that loses its last acknowledged writes would lose.
    """
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        system.env["MONGO_URL"], serverSelectionTimeoutMS=500
    )
    canary = client[system.env["MONGO_DB"]]["faults_canary"]
    acked: list[int] = []
    stop = asyncio.Event()

    async def write() -> None:
        # The server answered a ping at its last restart; on a loaded machine its first
        # query may still miss the client's 0.5 s selection timeout: ask until it answers.
        deadline = time.monotonic() + size.max_wait_between_s
        while True:
            try:
                n = await canary.count_documents({})
                break
            except PyMongoError:
                if time.monotonic() > deadline or stop.is_set():
                    return
                await asyncio.sleep(0.1)
        while not stop.is_set():
            try:
                await canary.insert_one({"_id": n})
            except PyMongoError:
                return
            acked.append(n)
            n += 1

    writer = asyncio.create_task(write())
    await when
    last = await _wait_for_progress(system, "read_models", size.max_wait_between_s, poll_s=0.001)
    before = {d["_id"]: d["entry_id"] for d in last or []}
    fault = await system.kill_and_restart("mongo", size.down_s)
    stop.set()
    await writer
    async with Checkpoints(system, "read_models") as checkpoints:
        docs = None
        for _ in range(50):  # the server has just answered a ping; give the read 10 s
            if (docs := await checkpoints.read()) is not None:
                break
            await asyncio.sleep(0.2)
        after = {d["_id"]: d["entry_id"] for d in docs or []}
    await client.close()
    client = AsyncMongoClient(system.env["MONGO_URL"], serverSelectionTimeoutMS=10_000)
    try:
        canary = client[system.env["MONGO_DB"]]["faults_canary"]
        found = await canary.find({"_id": {"$in": acked}}).to_list(None)
    finally:
        await client.close()
    present = {d["_id"] for d in found}
    went_back = [
        f"p{p} {entry}->{after.get(p)}"
        for p, entry in sorted(before.items())
        if after.get(p) is None or parse_stream_id(after[p]) < parse_stream_id(entry)
    ]
    lost = [n for n in acked if n not in present]
    parts = [
        f"server LOST {len(lost)} of {len(acked)} acknowledged canary inserts (last {lost[-3:]})"
        if lost
        else f"all {len(acked)} acknowledged canary inserts survived",
        "read-model checkpoints unreadable after the restart"
        if docs is None
        else "server LOST acknowledged read-model checkpoints: " + ", ".join(went_back)
        if went_back
        else "read-model checkpoints intact",
    ]
    system.faults[system.faults.index(fault)] = dataclasses.replace(fault, detail="; ".join(parts))


async def _wait_for_progress(
    system: System, view: str, max_wait_s: float, poll_s: float = 0.02
) -> list[Any] | None:
    """Until ``view``'s checkpoints differ from what they are now (bounded); the last read."""
    deadline = time.monotonic() + max_wait_s
    async with Checkpoints(system, view) as checkpoints:
        first = now = await checkpoints.read()
        while time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
            now = await checkpoints.read()
            if first is None:
                first = now
            elif now is not None and now != first:
                break
        return now


async def _wait_for_acks(ledger: Ledger, more: int, max_wait_s: float) -> None:
    target = len(ledger.acknowledged()) + more
    deadline = time.monotonic() + max_wait_s
    while len(ledger.acknowledged()) < target and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def _wait_settled(system: System, ledger: Ledger, max_wait_s: float) -> float | None:
    """Until every acknowledged checkout's order is no longer ``awaiting_payment`` on the
    write side (paid, or expired by the worker once its reservation ran out), bounded;
    seconds it took, ``None`` if some still wait (the checks then say which)."""
    client = system.redis()
    store = EventStore(client, system.settings.redis.keys)
    started = time.monotonic()
    try:
        while True:
            keys = [f"order:{c.order_id}" for c in ledger.acknowledged_checkouts()]
            states = await store.load(keys) if keys else {}
            waiting = [
                k for k in keys if state_of(states, k, OrderState).status == "awaiting_payment"
            ]
            if not waiting:
                return round(time.monotonic() - started, 2)
            if time.monotonic() - started > max_wait_s:
                return None
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()


async def run(base: Path, size: Size | None = None, *, cluster: bool = False) -> Outcome:
    """One fault run. ``cluster``: on a three-primary Redis Cluster, with bill-now orders
    of two or three products (sagas) and checkouts, restocks, stock deltas, the
    :data:`CLUSTER_SCHEDULE`; without the catalogue, forget and archive load (not on the
    cluster yet)."""
    size = size or Size.from_env()
    if cluster:
        size = dataclasses.replace(
            size,
            acks_between_faults=size.cluster_acks_between_faults,
            catch_up_s=max(size.catch_up_s, size.cluster_catch_up_s),
        )
    schedule = CLUSTER_SCHEDULE if cluster else SCHEDULE
    ledger = Ledger()
    started = time.monotonic()
    extra = {"mongo": ["--sync-on-commit"]} if size.mongo_sync_on_commit else {}
    async with System(
        base, extra_args=extra, reservation_ttl_s=size.reservation_ttl_s, cluster=cluster
    ) as system:
        shop = Shop(system, ledger, size.seed, min_lines=2 if cluster else 1)
        load: list[asyncio.Task[None]] = []
        sagas_s: float | None = None
        try:
            await shop.setup(size.customers, size.products, size.stock, size.shoppers)
            if not cluster:
                await shop.add_forgettable(size.forgettable)
            load += [
                asyncio.create_task(
                    shop.customer_loop(c, size.order_pause_s, size.order_deadline_s)
                )
                for c in ledger.customers
                for _ in range(size.clients_per_customer)
            ]
            load += [
                asyncio.create_task(
                    shop.shopper_loop(
                        s, size.unpaid_every, size.shopper_pause_s, size.order_deadline_s
                    )
                )
                for s in ledger.shoppers
            ]
            load.append(
                asyncio.create_task(shop.restock_loop(size.restock_every_s, size.order_deadline_s))
            )
            load.append(
                asyncio.create_task(
                    shop.stock_loop(
                        size.stock_pause_s,
                        size.stock_lose_every,
                        size.order_deadline_s,
                        beyond_every=size.stock_beyond_every,
                        reuse_every=size.stock_reuse_every,
                    )
                )
            )
            if not cluster:
                load += _single_node_load(system, shop, ledger, size, base / "archive")
            for kind, target, when in schedule:
                await _inject(system, shop, kind, target, when, size)
            await _wait_for_acks(ledger, size.acks_between_faults, size.max_wait_between_s)
            shop.stop.set()
            await asyncio.gather(*load)
            load_s = round(time.monotonic() - started, 1)
            await shop.resolve(size.resolve_deadline_s)
            await shop.log_in_newcomers(size.resolve_deadline_s)
            settled_s = await _wait_settled(system, ledger, size.settle_s)
            if cluster:
                done, took = await sagas_settled(system, size.saga_settle_s)
                sagas_s = took if done else None
            await wait_caught_up(system, Observed(), size.catch_up_s)
            if not cluster:
                await final_archive(
                    system,
                    ledger.archive,
                    base / "archive",
                    keep=size.archive_keep,
                    segment_rows=size.archive_segment_rows,
                    lock_ttl_s=size.archive_lock_ttl_s,
                    deadline_s=size.archive_deadline_s,
                )
            observed = await observe(system, ledger, size.catch_up_s)
        finally:
            shop.stop.set()
            for task in load:
                task.cancel()
            await asyncio.gather(*load, return_exceptions=True)
            await shop.aclose()
        checks, counts = judge(
            ledger, observed, size.catch_up_s, size.reservation_ttl_s, cluster=cluster
        )
        tails = {name: s.tail(15) for name, s in system.services.items()}
        figures = _figures(system, ledger, checks, counts, size, load_s, started)
        figures["checkouts_settled_s"] = settled_s
        figures["cluster"] = cluster
        if cluster:
            figures["sagas_settled_s"] = sagas_s
            figures["sagas"] = _saga_figures(observed)
    name = "cluster" if cluster else "latest"
    logs = RESULTS / ("logs-cluster" if cluster else "logs")
    shutil.rmtree(logs, ignore_errors=True)
    shutil.copytree(base / "logs", logs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    return Outcome(ledger, observed, {c.name: c for c in checks}, figures, logs, tails)


def _saga_figures(observed: Observed) -> dict[str, int]:
    """Sagas in the log by kind and end (``billing billed``, ``checkout abandoned`` …)."""
    return _count(
        f"{'checkout' if s.place else 'billing'} {s.ends[0] if s.ends else 'unended'}"
        for s in observed.sagas.values()
    )


def _single_node_load(
    system: System, shop: Shop, ledger: Ledger, size: Size, archive_dir: Path
) -> list[asyncio.Task[None]]:
    """The load only the single-node run drives: categories, sellers and their products,
    sign-ups, forgets, and the operator's archive runs."""
    ledger.archive.keep = size.archive_keep
    return [
        asyncio.create_task(
            shop.catalog_loop(
                size.catalog_rounds,
                size.catalog_categories,
                size.catalog_stock,
                size.catalog_pause_s,
                size.order_deadline_s,
            )
        ),
        asyncio.create_task(
            shop.forget_loop(size.forget_orders_each, size.forget_pause_s, size.order_deadline_s)
        ),
        asyncio.create_task(
            shop.signup_loop(
                size.signups,
                size.signup_pause_s,
                size.signup_lose_every,
                size.signup_reuse_every,
                size.order_deadline_s,
            )
        ),
        asyncio.create_task(
            archive_loop(
                system,
                ledger.archive,
                shop.stop,
                archive_dir,
                keep=size.archive_keep,
                segment_rows=size.archive_segment_rows,
                every_s=size.archive_every_s,
                lock_ttl_s=size.archive_lock_ttl_s,
                seed=size.seed,
            )
        ),
    ]


def _figures(
    system: System,
    ledger: Ledger,
    checks: list[Check],
    counts: dict[str, int],
    size: Size,
    load_s: float,
    started: float,
) -> dict[str, Any]:
    orders = ledger.orders
    statuses: dict[str, int] = {}
    for o in orders:
        key = "unresolved" if o.status is None else str(o.status)
        statuses[key] = statuses.get(key, 0) + 1
    by_kind: dict[str, int] = {}
    for f in system.faults:
        by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
    return {
        "run_id": system.run_id,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        "load_seconds": load_s,
        "orders_sent": len(orders),
        "orders_acknowledged": len(ledger.acknowledged()),
        "orders_by_final_status": statuses,
        "order_attempts": sum(o.attempts for o in orders),
        "orders_retried": sum(1 for o in orders if o.attempts > 1),
        "units_acknowledged": sum(ledger.sold().values()),
        "checkouts_sent": len(ledger.checkouts),
        "checkouts_acknowledged": len(ledger.acknowledged_checkouts()),
        "checkouts_retried": sum(1 for c in ledger.checkouts if c.attempts > 1),
        "checkouts_left_unpaid": sum(1 for c in ledger.acknowledged_checkouts() if not c.pay),
        "payments_by_final_status": _count(
            "unresolved"
            if c.pay_status is None
            else f"{c.pay_status}{c.pay_current and ' ' + c.pay_current}"
            for c in ledger.acknowledged_checkouts()
            if c.pay
        ),
        "payment_attempts": sum(c.pay_attempts for c in ledger.checkouts),
        "payments_retried": sum(1 for c in ledger.checkouts if c.pay_attempts > 1),
        "orders_paid_in_log": counts.get("paid", 0),
        "orders_expired_in_log": counts.get("expired", 0),
        "restocks_acknowledged": len(ledger.restocks),
        "restocks_unacknowledged": len(ledger.unacked_restocks),
        "restock_retries": ledger.restock_retries,
        "stock_deltas_sent": len(ledger.stock_deltas),
        "stock_deltas_by_final_status": _count(
            "unresolved" if d.status is None else f"{d.status}{d.problem and ' ' + d.problem}"
            for d in ledger.stock_deltas
        ),
        "stock_deltas_by_actor": _count(d.actor for d in ledger.acknowledged_deltas()),
        "stock_deltas_retried_on_fault": sum(1 for d in ledger.stock_deltas if d.retried_on_fault),
        "stock_deltas_answers_lost": sum(1 for d in ledger.stock_deltas if d.lost_answer),
        "stock_deltas_beyond_by_final_status": _count(
            "unresolved" if d.status is None else f"{d.status}{d.problem and ' ' + d.problem}"
            for d in ledger.stock_deltas
            if d.beyond
        ),
        "reuses_by_final_status": _count(
            f"{r.kind} "
            + ("unresolved" if r.status is None else f"{r.status}{r.problem and ' ' + r.problem}")
            for r in ledger.reuses
        ),
        "newcomers_logged_in": len(ledger.newcomers),
        "stock_units_adjusted": {
            "up": sum(d.delta for d in ledger.acknowledged_deltas() if d.delta > 0),
            "down": sum(d.delta for d in ledger.acknowledged_deltas() if d.delta < 0),
        },
        "faults_injected": len(system.faults),
        "faults_by_kind": by_kind,
        "faults": [asdict(f) for f in system.faults],
        "mongo_lost_acknowledged_writes": sum(1 for f in system.faults if "LOST" in f.detail),
        "unexpected_exits": [
            {"at": at, "service": name, "code": code} for at, name, code in system.unexpected_exits
        ],
        "writes_acknowledged": _count(w.kind for w in ledger.writes if w.acknowledged),
        "writes_sent": _count(w.kind for w in ledger.writes),
        "writes_retried": sum(1 for w in ledger.writes if w.attempts > 1),
        "writes_retried_on_fault": sum(1 for w in ledger.writes if w.retried_on_fault),
        "writes_done_on_retry": sum(1 for w in ledger.writes if w.done_on_retry),
        "writes_keyed": _count(w.kind for w in ledger.writes if w.keyed),
        "writes_answers_lost": _count(
            f"{w.kind} {'keyed' if w.keyed else 'unkeyed'}" for w in ledger.writes if w.lost_answer
        ),
        "writes_refused": [
            f"{w.kind} {w.subject}: {w.status} {w.problem}"
            for w in ledger.writes
            if w.status is not None and not w.acknowledged
        ],
        "customers_forgotten": len(ledger.forgotten()),
        "archive_runs": ledger.archive.runs,
        "archive_runs_completed": ledger.archive.completed,
        "archive_kills": ledger.archive.kills,
        "archive_missed_kills": ledger.archive.missed_kills,
        "archive_refused": ledger.archive.refused,
        "archive_errors": ledger.archive.errors,
        "archive_final_exit": ledger.archive.final,
        "entries_archived": ledger.archive.entries,
        "segments_archived": ledger.archive.segments,
        "acknowledged_orders_archived": counts.get("archived_orders", 0),
        "lost": counts["lost"],
        "duplicated": counts["duplicated"],
        "checks": {c.name: ("ok" if c.ok else f"FAILED ({len(c.problems)})") for c in checks},
        "passed": all(c.ok for c in checks),
        "failures": {c.name: c.report() for c in checks if not c.ok},
        "size": asdict(size),
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def format_figures(figures: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} x{n}" for k, n in figures["faults_by_kind"].items())
    exits = ", ".join(
        f"{e['service']}({e['code']})@{e['at']}s" for e in figures["unexpected_exits"]
    )
    lines = [
        f"fault run {figures['run_id']}: {figures['seconds']}s "
        f"(load {figures['load_seconds']}s); {'PASSED' if figures['passed'] else 'FAILED'}",
        f"  orders acknowledged  {figures['orders_acknowledged']} of {figures['orders_sent']} sent "
        f"({figures['orders_retried']} retried, {figures['order_attempts']} attempts; "
        f"final statuses {figures['orders_by_final_status']})",
        f"  checkouts acknowledged {figures.get('checkouts_acknowledged')} of "
        f"{figures.get('checkouts_sent')} sent ({figures.get('checkouts_retried')} retried; "
        f"{figures.get('checkouts_left_unpaid')} left unpaid); payments "
        f"{figures.get('payments_by_final_status')} ({figures.get('payments_retried')} retried, "
        f"{figures.get('payment_attempts')} attempts); in the log {figures.get('orders_paid_in_log')} "
        f"paid, {figures.get('orders_expired_in_log')} expired; all settled in "
        f"{figures.get('checkouts_settled_s')}s",
        f"  restocks acknowledged {figures['restocks_acknowledged']} "
        f"({figures['restock_retries']} re-sends)",
        f"  stock deltas         {figures.get('stock_deltas_sent')} sent, final statuses "
        f"{figures.get('stock_deltas_by_final_status')}, by {figures.get('stock_deltas_by_actor')} "
        f"({figures.get('stock_deltas_retried_on_fault')} retried on a fault, "
        f"{figures.get('stock_deltas_answers_lost')} "
        f"answers lost on purpose); units {figures.get('stock_units_adjusted')}; sent beyond "
        f"the stock {figures.get('stock_deltas_beyond_by_final_status')}",
        f"  reused keys          {figures.get('reuses_by_final_status')}",
        f"  faults injected      {figures['faults_injected']}: {kinds}",
        f"  unexpected exits     {exits or 'none'}",
        f"  mongo kills after which the server had lost acknowledged writes: "
        f"{figures['mongo_lost_acknowledged_writes']}",
        f"  writes acknowledged  {figures.get('writes_acknowledged')} of "
        f"{figures.get('writes_sent')} ({figures.get('writes_retried')} retried, "
        f"{figures.get('writes_retried_on_fault')} of them on a fault, "
        f"{figures.get('writes_done_on_retry')} told 'already done' by a retry); keyed "
        f"{figures.get('writes_keyed')}; answers lost on purpose {figures.get('writes_answers_lost')}"
        f"; customers forgotten {figures.get('customers_forgotten')}; new customers logged "
        f"in {figures.get('newcomers_logged_in')}",
        f"  archive runs         {figures.get('archive_runs')} ({figures.get('archive_runs_completed')} "
        f"completed, {len(figures.get('archive_kills', []))} killed, refused "
        f"{figures.get('archive_refused')}, {len(figures.get('archive_errors', []))} errors; last "
        f"exit {figures.get('archive_final_exit')}): {figures.get('entries_archived')} entries in "
        f"{figures.get('segments_archived')} segments; acknowledged orders read from the "
        f"archive {figures.get('acknowledged_orders_archived')}",
        *(f"  archive kill -9 {k}" for k in figures.get("archive_kills", [])),
        f"  lost {figures['lost']}, duplicated {figures['duplicated']}",
    ]
    if figures.get("cluster"):
        lines.insert(
            1,
            f"  on a 3-primary Redis Cluster: sagas {figures.get('sagas')}, all settled in "
            f"{figures.get('sagas_settled_s')}s",
        )
    lines += [
        f"  fault at {f['at']}s: {f['kind']} ({f['detail']})"
        for f in figures["faults"]
        if f["detail"]
    ]
    lines += [f"  {name}: {state}" for name, state in figures["checks"].items()]
    return "\n".join(lines)
