"""The warehouse projection: a star schema in PostgreSQL, written in bulk, checkpoint in the
same transaction.

``dim_product`` is a type-2 slowly changing dimension: a name, price or currency change
closes the current version (``valid_to``) and opens the next; a category change is type 1
(overwrites every version). An order line points at the version valid at its billing
time, resolved by time, not by arrival: products and orders live in different partitions,
so when a version arrives after orders billed under it (a rebuild applies partitions
concurrently) the lines billed since its ``valid_from`` are re-pointed. Per-product
advisory locks serialise that against concurrent fact inserts: exclusive where a batch
changes the product, shared where it only sells it (sales do not exclude each other).

Exactly once: the partition checkpoint is committed with the batch, and events whose
effects are not idempotent by themselves (product and login events) are also guarded by
their aggregate's version (``aggregate_versions``), so a re-driven dead letter, which lies
behind the checkpoint, is applied once (:meth:`WarehouseProjection.redrive`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from events.codec import RecordedEvent
from events.keys import digest
from events.positions import parse_stream_id
from events.types import (
    AccountCreated,
    AccountDeactivated,
    AccountProfileChanged,
    AccountReactivated,
    CartItemSet,
    CategoryCreated,
    CategoryDeleted,
    CategoryRenamed,
    CustomerForgotten,
    LoginFailed,
    LoginSucceeded,
    OrderBilled,
    OrderCancelled,
    OrderDelivered,
    OrderExpired,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    PasswordChanged,
    PaymentDeclined,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    RefundIssued,
)
from projections.views import (
    CheckpointedSchema,
    postgres_pool,
    run_setup,
    sink_errors,
    sql_file,
)
from projections.warehouse_catalog import CatalogRows, write_catalog

PRODUCT_COLUMNS = (
    "product_id",
    "version",
    "sku",
    "name",
    "category",
    "price",
    "currency",
    "valid_from",
    "valid_to",
    "is_current",
    "deleted",
    "opened_by_seq",
)

LINE_COLUMNS = (
    "order_id",
    "line_no",
    "date_key",
    "billed_at",
    "account_id",
    "product_id",
    "product_name",
    "quantity",
    "unit_price",
    "revenue",
    "currency",
)
LINE_TYPES = (
    "text",
    "smallint",
    "integer",
    "timestamptz",
    "text",
    "text",
    "text",
    "integer",
    "bigint",
    "bigint",
    "text",
)
"""The SQL types of :data:`LINE_COLUMNS`, as ``fact_order_line`` declares them."""
STAGE_FROM = 256
"""Order lines from which a batch's lines are staged by ``COPY`` (see ``_write_lines``)."""


VERSIONED = (
    ProductCreated,
    ProductUpdated,
    ProductDeleted,
    LoginSucceeded,
    LoginFailed,
    CategoryCreated,
    CategoryRenamed,
    CategoryDeleted,
)
"""Events whose warehouse effect depends on being applied once and in aggregate order."""


def date_key(moment: datetime | date) -> int:
    day = moment.date() if isinstance(moment, datetime) else moment
    return day.year * 10000 + day.month * 100 + day.day


def date_row(day: date) -> tuple[Any, ...]:
    iso = day.isocalendar()
    return (
        date_key(day),
        day,
        day.year,
        (day.month - 1) // 3 + 1,
        day.month,
        day.day,
        iso.year,
        iso.week,
        iso.weekday,
        day - timedelta(days=iso.weekday - 1),
        day.replace(day=1),
    )


@dataclass(frozen=True, slots=True)
class ProductVersion:
    product_id: str
    version: int
    sku: str
    name: str
    category: str
    price: int
    currency: str
    valid_from: datetime
    valid_to: datetime | None
    is_current: bool
    deleted: bool
    opened_by_seq: int

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in PRODUCT_COLUMNS)


@dataclass(slots=True)
class ProductChanges:
    """What a batch does to ``dim_product``: versions to write, type-1 categories, and the
    earliest ``valid_from`` opened (facts billed since then are re-pointed)."""

    versions: dict[tuple[str, int], ProductVersion] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)
    opened: dict[str, datetime] = field(default_factory=dict)


def fold_products(
    current: dict[str, ProductVersion], events: Iterable[RecordedEvent]
) -> ProductChanges:
    """Pure SCD-2 fold: the current version of each product, then its events, in order."""
    changes = ProductChanges()
    state = dict(current)

    def put(version: ProductVersion) -> None:
        state[version.product_id] = version
        changes.versions[(version.product_id, version.version)] = version

    def open_version(version: ProductVersion) -> None:
        put(version)
        opened = changes.opened.get(version.product_id)
        if opened is None or version.valid_from < opened:
            changes.opened[version.product_id] = version.valid_from

    for rec in events:
        match rec.event:
            case ProductCreated() as e:
                open_version(
                    ProductVersion(
                        product_id=e.product_id,
                        version=1,
                        sku=e.sku,
                        name=e.name,
                        category=e.category,
                        price=e.price,
                        currency=e.currency,
                        valid_from=rec.at,
                        valid_to=None,
                        is_current=True,
                        deleted=False,
                        opened_by_seq=rec.seq,
                    )
                )
            case ProductUpdated() as e if e.product_id in state:
                cur = state[e.product_id]
                if e.category is not None and e.category != cur.category:
                    changes.categories[e.product_id] = e.category
                    cur = replace(cur, category=e.category)
                    put(cur)
                name = e.name if e.name is not None else cur.name
                price = e.price if e.price is not None else cur.price
                currency = e.currency if e.currency is not None else cur.currency
                if (name, price, currency) != (cur.name, cur.price, cur.currency):
                    put(replace(cur, valid_to=rec.at, is_current=False))
                    open_version(
                        replace(
                            cur,
                            version=cur.version + 1,
                            name=name,
                            price=price,
                            currency=currency,
                            valid_from=rec.at,
                            valid_to=None,
                            is_current=True,
                            opened_by_seq=rec.seq,
                        )
                    )
            case ProductDeleted() as e if e.product_id in state:
                put(replace(state[e.product_id], valid_to=rec.at, deleted=True))
            case _:
                pass
    return changes


def order_line_rows(rec: RecordedEvent, order: OrderBilled | OrderPaid) -> list[tuple[Any, ...]]:
    """``fact_order_line`` staging rows of one sale (before the product version is resolved):
    a bill-now order, or a checkout when it is paid (its ``billed_at`` is the payment's time;
    an order that expires or is cancelled unpaid is no sale)."""
    return [
        (
            order.order_id,
            no,
            date_key(rec.at),
            rec.at,
            order.account_id,
            line.product_id,
            line.name,
            line.quantity,
            line.unit_price,
            line.line_total,
            order.currency,
        )
        for no, line in enumerate(order.lines, start=1)
    ]


STATUS_OF: dict[type, str] = {
    OrderPlaced: "awaiting_payment",
    OrderPaid: "paid",
    OrderShipped: "shipped",
    OrderDelivered: "delivered",
    OrderCancelled: "cancelled",
    OrderExpired: "expired",
}


@dataclass(slots=True)
class Batch:
    """The rows a batch adds, grouped by table (pure; built before touching the database)."""

    dates: set[date] = field(default_factory=set)
    accounts: list[tuple[Any, ...]] = field(default_factory=list)
    forgotten: list[tuple[str]] = field(default_factory=list)
    logins: dict[tuple[int, str], list[Any]] = field(default_factory=dict)
    lines: list[tuple[Any, ...]] = field(default_factory=list)
    product_events: list[RecordedEvent] = field(default_factory=list)
    statuses: list[tuple[Any, ...]] = field(default_factory=list)
    payments: list[tuple[Any, ...]] = field(default_factory=list)
    refunds: list[tuple[Any, ...]] = field(default_factory=list)
    shipments: list[tuple[Any, ...]] = field(default_factory=list)
    carts: set[tuple[int, str]] = field(default_factory=set)
    catalog: CatalogRows = field(default_factory=CatalogRows)
    """Sellers and categories (:mod:`projections.warehouse_catalog`)."""

    def lifecycle(self, rec: RecordedEvent) -> None:
        """The order lifecycle's facts of one event (see ``warehouse.sql``)."""
        event, day, at = rec.event, date_key(rec.at), rec.at
        self.dates.add(rec.at.date())
        if (status := STATUS_OF.get(type(event))) is not None:
            self.statuses.append((event.order_id, rec.seq, day, at, status))  # type: ignore[union-attr]
        match event:
            case OrderPaid() as e:
                self.payments.append(
                    (e.order_id, e.attempt, day, at, "captured", e.amount, e.currency, e.provider)
                )
                self.lines.extend(order_line_rows(rec, e))
            case PaymentDeclined() as e:
                self.payments.append(
                    (e.order_id, e.attempt, day, at, "declined", None, None, e.provider)
                )
            case RefundIssued() as e:
                status = "refunded" if e.full else "partially_refunded"
                self.statuses.append((e.order_id, rec.seq, day, at, status))
                self.refunds.append((e.order_id, e.refund_id, day, at, e.amount, e.reason))
            case OrderCancelled() as e if e.refunded:
                refund_id = f"{e.order_id}:cancel"
                reason = e.reason or "cancelled"
                self.refunds.append((e.order_id, refund_id, day, at, e.refunded, reason))
            case OrderShipped() as e:
                self.shipments.append((e.order_id, e.shipment_id, day, at, e.carrier))
            case _:
                pass

    @property
    def changed_product_ids(self) -> list[str]:
        """The products whose versions the batch may open, close or recategorise."""
        return sorted({rec.event.product_id for rec in self.product_events})  # type: ignore[union-attr]

    @property
    def product_ids(self) -> list[str]:
        ids = {rec.event.product_id for rec in self.product_events}  # type: ignore[union-attr]
        ids.update(line[5] for line in self.lines)
        return sorted(ids)

    def login(
        self, rec: RecordedEvent, email_digest: str, account_id: str | None, ok: bool
    ) -> None:
        self.dates.add(rec.at.date())
        row = self.logins.setdefault((date_key(rec.at), email_digest), [account_id, 0, 0])
        row[0] = row[0] or account_id
        row[1 if ok else 2] += 1

    @classmethod
    def of(cls, events: Iterable[RecordedEvent]) -> Batch:
        batch = cls()
        for rec in events:
            match rec.event:
                case AccountCreated() as e:
                    batch.dates.add(rec.at.date())
                    batch.accounts.append(
                        (
                            e.account_id,
                            e.email_digest or digest(e.email),
                            e.role,
                            rec.at,
                            date_key(rec.at),
                        )
                    )
                    if e.role == "seller":
                        batch.catalog.sellers.append((e.account_id, rec.at, date_key(rec.at)))
                case LoginSucceeded() as e:
                    batch.login(rec, e.email_digest, e.account_id, ok=True)
                case LoginFailed() as e:
                    batch.login(rec, e.email_digest, e.account_id, ok=False)
                case OrderBilled() as e:
                    batch.dates.add(rec.at.date())
                    batch.lines.extend(order_line_rows(rec, e))
                case ProductCreated() as e:
                    batch.product_events.append(rec)
                    if e.seller_id is not None:
                        batch.catalog.product_sellers.append((e.product_id, e.seller_id))
                case ProductUpdated() | ProductDeleted():
                    batch.product_events.append(rec)
                case CategoryCreated() | CategoryRenamed() | CategoryDeleted():
                    batch.catalog.category_events.append(rec)
                case (
                    AccountProfileChanged()
                    | PasswordChanged()
                    | AccountDeactivated()
                    | AccountReactivated()
                ):
                    pass  # dim_account holds no profile, secret or activation columns
                case CustomerForgotten() as e:
                    batch.forgotten.append((e.account_id,))
                case CartItemSet() as e:
                    batch.dates.add(rec.at.date())
                    batch.carts.add((date_key(rec.at), e.account_id))
                case (
                    OrderPlaced()
                    | PaymentDeclined()
                    | OrderPaid()
                    | OrderExpired()
                    | OrderCancelled()
                    | RefundIssued()
                    | OrderShipped()
                    | OrderDelivered()
                ):
                    batch.lifecycle(rec)
                case _:
                    pass  # cart removals, check-outs and stock adjustments are no facts
        return batch


def _resolve_version(s: str, alias: str) -> str:
    """SQL: the version of ``alias.product_id`` valid at ``alias.billed_at``.

    Among the versions opened at or before the billing time, the newest one whose name and
    price are what the line was billed at wins (this settles a change and an order in the
    same millisecond), else the newest; if none was open yet (clock skew), the first.
    """
    return (
        f"COALESCE((SELECT d.version FROM {s}.dim_product d"
        f" WHERE d.product_id = {alias}.product_id AND d.valid_from <= {alias}.billed_at"
        f" ORDER BY (d.price = {alias}.unit_price AND d.name = {alias}.product_name) DESC,"
        f" d.valid_from DESC, d.version DESC LIMIT 1),"
        f" (SELECT min(d.version) FROM {s}.dim_product d"
        f" WHERE d.product_id = {alias}.product_id))"
    )


class WarehouseProjection(CheckpointedSchema):
    """The star schema in ``<schema>`` (see the module docstring)."""

    name = "warehouse"
    version = 2
    """The schema (``warehouse.sql``) and rows this code writes. Bump it with any change
    to them (a column, a table, what a row holds): a projector that starts against a
    warehouse built by an older version rebuilds it into a new schema and switches, so new
    code never writes to an old schema (see ``docs/architecture.md``, projection versions)."""

    SCHEMA_FILE = "warehouse.sql"

    def __init__(self, pool: asyncpg.Pool, schema: str = "dw") -> None:
        super().__init__(pool, schema)
        self._s = f'"{self.schema}"'

    def schema_sql(self) -> str:
        """The DDL of the star schema, for this projection's schema (idempotent)."""
        return sql_file(self.SCHEMA_FILE, self.schema)

    async def setup(self) -> None:
        await run_setup(self.pool, self.schema_sql(), self.schema)

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        await self.apply_checkpointed(partition, events, self._apply_fresh)

    async def _apply_fresh(
        self, conn: asyncpg.Connection, events: list[RecordedEvent], head: asyncpg.Record
    ) -> dict[str, Any]:
        await self.write_entries(conn, events)
        return {}

    async def write_entries(self, conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        """Write the rows of ``events`` (past their checkpoints; of one partition or several,
        each partition's in log order) in the caller's transaction; the checkpoints are the
        caller's (:mod:`projections.warehouse_bulk` writes several partitions at once)."""
        await self._write(conn, Batch.of(await self._unapplied(conn, events)))

    async def redrive(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        """Apply re-driven dead letters of ``partition``, guarded per aggregate, not by the
        checkpoint: later entries of other aggregates moved it past them meanwhile. The
        checkpoint stays where it is (it is the resume point of the live projector)."""
        if not events:
            return
        s = self._s
        with sink_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    f"SELECT 1 FROM {s}.checkpoints WHERE partition = $1 FOR UPDATE", partition
                )
                await self._write(conn, Batch.of(await self._unapplied(conn, events)))

    async def advance(self, partition: int, entry_id: str) -> None:
        """Move the checkpoint forward to ``entry_id`` (never back): the runtime calls it
        once every entry up to there is applied or parked."""
        with sink_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                head = await self.lock_checkpoint(conn, partition)
                if parse_stream_id(entry_id) > parse_stream_id(head["entry_id"]):
                    await self.set_checkpoint(conn, partition, {"entry_id": entry_id})

    async def _unapplied(
        self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]
    ) -> list[RecordedEvent]:
        """``events`` less the versioned ones (see ``VERSIONED``) already applied; records
        the versions the rest bring, in the caller's transaction."""
        versioned = [rec for rec in events if isinstance(rec.event, VERSIONED)]
        if not versioned:
            return list(events)
        rows = await conn.fetch(
            f"SELECT aggregate, seq FROM {self._s}.aggregate_versions"
            " WHERE aggregate = ANY($1::text[])",
            sorted({rec.aggregate for rec in versioned}),
        )
        seen = {r["aggregate"]: int(r["seq"]) for r in rows}
        before = dict(seen)
        out: list[RecordedEvent] = []
        for rec in events:
            if isinstance(rec.event, VERSIONED):
                if rec.seq <= seen.get(rec.aggregate, 0):
                    continue
                seen[rec.aggregate] = rec.seq
            out.append(rec)
        moved = [(a, v) for a, v in seen.items() if before.get(a) != v]
        if moved:
            await conn.execute(
                f"INSERT INTO {self._s}.aggregate_versions"
                " SELECT * FROM unnest($1::text[], $2::bigint[])"
                " ON CONFLICT (aggregate) DO UPDATE SET seq = excluded.seq",
                [a for a, _ in moved],
                [v for _, v in moved],
            )
        return out

    async def _write(self, conn: asyncpg.Connection, batch: Batch) -> None:
        s = self._s
        product_ids = batch.product_ids
        if product_ids:
            # Exclusive for a product whose versions this batch changes (it re-points lines),
            # shared for one it only sells: line inserts of several partitions go side by
            # side, and each waits for, or is waited for by, any change of its products.
            # One statement, in sorted order, so two batches never wait on each other.
            await conn.execute(
                "SELECT count(CASE WHEN x = ANY($3::text[])"
                " THEN pg_advisory_xact_lock(hashtextextended($2 || x, 0))::text"
                " ELSE pg_advisory_xact_lock_shared(hashtextextended($2 || x, 0))::text END)"
                " FROM unnest($1::text[]) AS x",
                product_ids,
                f"{self.schema}:product:",
                batch.changed_product_ids,
            )
        if batch.product_events:
            await self._write_products(conn, batch.product_events)
        if batch.catalog:
            await write_catalog(conn, s, batch.catalog)
        if batch.dates:
            await conn.executemany(
                f"INSERT INTO {s}.dim_date VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
                " ON CONFLICT DO NOTHING",
                [date_row(day) for day in sorted(batch.dates)],
            )
        if batch.accounts:
            await conn.executemany(
                f"INSERT INTO {s}.dim_account VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                batch.accounts,
            )
        if batch.forgotten:
            # The digest goes too: the address may sign up again as another account.
            await conn.executemany(
                f"UPDATE {s}.dim_account SET forgotten = true, email_digest = ''"
                " WHERE account_id = $1",
                batch.forgotten,
            )
        if batch.logins:
            await conn.executemany(
                f"INSERT INTO {s}.fact_login AS f VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (date_key, email_digest) DO UPDATE SET"
                " successes = f.successes + excluded.successes,"
                " failures = f.failures + excluded.failures,"
                " account_id = COALESCE(f.account_id, excluded.account_id)",
                [(k[0], k[1], *v) for k, v in batch.logins.items()],
            )
        for table, rows in (
            ("fact_order_status", batch.statuses),
            ("fact_payment", batch.payments),
            ("fact_refund", batch.refunds),
            ("fact_shipment", batch.shipments),
            ("fact_cart_day", sorted(batch.carts)),
        ):
            if rows:
                marks = ", ".join(f"${i}" for i in range(1, len(rows[0]) + 1))
                await conn.executemany(
                    f"INSERT INTO {s}.{table} VALUES ({marks}) ON CONFLICT DO NOTHING", rows
                )
        if batch.lines:
            await self._write_lines(conn, batch.lines)

    async def _write_lines(self, conn: asyncpg.Connection, lines: list[tuple[Any, ...]]) -> None:
        """Insert order lines with the product version valid when each was billed.

        A few lines (a live batch) go as one statement over the columns as arrays. Many (a
        rebuild's batch) go through a temporary table filled by ``COPY``: its creation, fill
        and drop cost four round trips and a catalog insert and delete per batch, most of a
        small batch's server time, but ``COPY`` encodes rows for less of our CPU than the
        arrays do, which pays from about :data:`STAGE_FROM` lines on.
        """
        s = self._s
        columns = ", ".join(LINE_COLUMNS)
        insert = (
            f"INSERT INTO {s}.fact_order_line ({columns}, product_version)"
            f" SELECT st.*, {_resolve_version(s, 'st')}"
        )
        if len(lines) < STAGE_FROM:
            arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(LINE_TYPES, start=1))
            await conn.execute(
                f"{insert} FROM unnest({arrays}) AS st({columns}) ON CONFLICT DO NOTHING",
                *(list(column) for column in zip(*lines, strict=True)),
            )
            return
        await conn.execute(
            "CREATE TEMP TABLE stage_lines ON COMMIT DROP AS"
            f" SELECT {columns} FROM {s}.fact_order_line WITH NO DATA"
        )
        await conn.copy_records_to_table("stage_lines", columns=LINE_COLUMNS, records=lines)
        await conn.execute(f"{insert} FROM stage_lines st ON CONFLICT DO NOTHING")

    async def _write_products(self, conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        s = self._s
        ids = sorted({rec.event.product_id for rec in events})  # type: ignore[union-attr]
        rows = await conn.fetch(
            f"SELECT DISTINCT ON (product_id) {', '.join(PRODUCT_COLUMNS)} FROM {s}.dim_product"
            " WHERE product_id = ANY($1::text[]) ORDER BY product_id, version DESC",
            ids,
        )
        current = {r["product_id"]: ProductVersion(**dict(r)) for r in rows}
        changes = fold_products(current, events)
        if changes.versions:
            updates = ", ".join(f"{c} = excluded.{c}" for c in PRODUCT_COLUMNS[2:])
            placeholders = ", ".join(f"${i}" for i in range(1, len(PRODUCT_COLUMNS) + 1))
            await conn.executemany(
                f"INSERT INTO {s}.dim_product ({', '.join(PRODUCT_COLUMNS)})"
                f" VALUES ({placeholders}) ON CONFLICT (product_id, version) DO UPDATE SET {updates}",
                [v.row() for v in changes.versions.values()],
            )
        if changes.categories:
            await conn.executemany(
                f"UPDATE {s}.dim_product SET category = $2 WHERE product_id = $1",
                list(changes.categories.items()),
            )
        if changes.opened:
            await conn.executemany(
                f"UPDATE {s}.fact_order_line f SET product_version = {_resolve_version(s, 'f')}"
                " WHERE f.product_id = $1 AND (f.billed_at >= $2 OR f.product_version IS NULL)",
                list(changes.opened.items()),
            )


@contextlib.asynccontextmanager
async def warehouse_projection(
    settings: Any, version: str | None = None
) -> AsyncIterator[WarehouseProjection]:
    """Runtime factory; ``settings`` is ``app.settings.Settings`` (duck-typed).

    ``version`` builds the star schema in ``dw_<version>`` (a rebuild's target).
    """
    async with postgres_pool(settings.postgres.url) as pool:
        yield WarehouseProjection(pool, f"dw_{version}" if version else "dw")
