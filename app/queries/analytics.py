"""Analytics over the warehouse: sales per period, top products, the funnel, logins per day.

``from`` and ``to`` are dates (UTC days), both inclusive; either may be left out. Sales and
top products are open to sellers, scoped to their own products (``product_seller``); an
admin sees everything and may filter by ``seller_id``. A seller's refunds are its share of
each refunded order (its lines' revenue over the order's).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.params import QueryParameter

from app.auth import Principal, acting_seller, admin_only, admin_or_seller
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.cursors import bad_param
from app.queries.read_side import read_side, store_errors

From = Annotated[date | None, QueryParameter(name="from", required=False, description="First day.")]
To = Annotated[date | None, QueryParameter(name="to", required=False, description="Last day.")]

SellerFilter = Annotated[
    str | None,
    QueryParameter(
        min_length=1, max_length=100, description="Only this seller's products (admin)."
    ),
]

PERIODS = {"day": "d.date", "week": "d.week_start", "month": "d.month_start"}
"""Granularity → the ``dim_date`` column that names the period (weeks start on Monday)."""


class SalesPeriod(msgspec.Struct, frozen=True, kw_only=True):
    period: date
    """First day of the period."""
    orders: int
    items: int
    revenue: int
    """What was sold (billed now, or checked out and paid) in the period: the gross."""
    gross: int = 0
    refunds: int = 0
    """Refunded in the period (refunds and cancellations of paid orders)."""
    net: int = 0


class TopProduct(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    name: str
    """The product's name in its newest version."""
    quantity: int
    revenue: int
    orders: int


class FunnelPeriod(msgspec.Struct, frozen=True, kw_only=True):
    period: date
    carts: int
    """Accounts that put something in their cart in the period."""
    checkouts: int
    paid: int
    shipped: int
    delivered: int
    cancelled: int
    expired: int
    cancellation_rate: float
    """Cancellations per checkout (a bill-now order is no checkout, its cancellation counts)."""
    expiry_rate: float
    ship_p50_seconds: float | None
    """Time from payment to shipment of the orders shipped in the period (median)."""
    ship_p95_seconds: float | None


class LoginDay(msgspec.Struct, frozen=True, kw_only=True):
    date: date
    successes: int
    failures: int


def _seller_scope(request: Request[Principal, Any, Any], seller_id: str | None) -> str | None:
    """The seller whose products a sales query covers: a seller's own, always; an
    admin's ``seller_id`` (``None``: every product)."""
    seller = acting_seller(request.user)
    if seller is None:
        return seller_id
    if seller_id not in (None, seller):
        raise PermissionDeniedException("a seller sees its own sales only")
    return seller


def _days(start: date | None, end: date | None) -> tuple[date, date]:
    if start is not None and end is not None and start > end:
        raise bad_param("from", "from is after to")
    return start or date(1, 1, 1), end or date(9999, 12, 31)


class AnalyticsController(Controller):
    path = "/analytics"
    guards = [admin_or_seller]
    tags = ["analytics"]

    @get(
        "/sales",
        operation_id="salesPerPeriod",
        responses=problem_responses(400, 401, 403),
    )
    async def sales(
        self,
        request: Request[Principal, Any, Any],
        state: State,
        granularity: Annotated[Literal["day", "week", "month"], QueryParameter()] = "day",
        start: From = None,
        end: To = None,
        seller_id: SellerFilter = None,
        min_position: MinPosition = None,
    ) -> Response[list[SalesPeriod]]:
        """Orders, items and revenue (minor units) per day, ISO week or month, with the
        refunds of the period and the net (``gross - refunds``)."""
        seller = _seller_scope(request, seller_id)
        side = await read_side(state)
        view = await wait_for(side.warehouse, min_position)
        s, period = side.warehouse.schema, PERIODS[granularity]
        if seller is None:
            lines, refunds = f'"{s}".fact_order_line', f'"{s}".fact_refund'
        else:
            # Sub-selects of the seller's lines, and of its share of each refund.
            lines = (
                f'(SELECT f.* FROM "{s}".fact_order_line f JOIN "{s}".product_seller ps'
                " USING (product_id) WHERE ps.seller_id = $3)"
            )
            refunds = (
                "(SELECT r.date_key, (r.amount * o.mine / NULLIF(o.whole, 0))::bigint AS amount"
                f' FROM "{s}".fact_refund r JOIN (SELECT f.order_id,'
                " sum(f.revenue) FILTER (WHERE ps.seller_id = $3) AS mine,"
                " sum(f.revenue) AS whole"
                f' FROM "{s}".fact_order_line f LEFT JOIN "{s}".product_seller ps'
                " USING (product_id) GROUP BY f.order_id) o USING (order_id)"
                " WHERE o.mine > 0)"
            )
        with store_errors():
            rows = await side.pool.fetch(
                f"WITH sales AS (SELECT {period} AS period, count(DISTINCT f.order_id) AS orders,"
                " sum(f.quantity)::bigint AS items, sum(f.revenue)::bigint AS revenue"
                f' FROM {lines} f JOIN "{s}".dim_date d USING (date_key)'
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY 1),"
                f" refunds AS (SELECT {period} AS period, sum(r.amount)::bigint AS refunds"
                f' FROM {refunds} r JOIN "{s}".dim_date d USING (date_key)'
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY 1)"
                " SELECT period, coalesce(orders, 0) AS orders, coalesce(items, 0) AS items,"
                " coalesce(revenue, 0) AS revenue, coalesce(refunds, 0) AS refunds"
                " FROM sales FULL JOIN refunds USING (period) ORDER BY 1",
                *_days(start, end),
                *([] if seller is None else [seller]),
            )
        result = [
            SalesPeriod(
                period=r["period"],
                orders=r["orders"],
                items=r["items"],
                revenue=r["revenue"],
                gross=r["revenue"],
                refunds=r["refunds"],
                net=r["revenue"] - r["refunds"],
            )
            for r in rows
        ]
        return view_response(result, view)

    @get(
        "/top-products",
        operation_id="topProducts",
        responses=problem_responses(400, 401, 403),
    )
    async def top_products(
        self,
        request: Request[Principal, Any, Any],
        state: State,
        start: From = None,
        end: To = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
        by: Annotated[Literal["revenue", "quantity"], QueryParameter()] = "revenue",
        seller_id: SellerFilter = None,
        min_position: MinPosition = None,
    ) -> Response[list[TopProduct]]:
        """The best sellers by revenue or by quantity, ties by product id."""
        seller = _seller_scope(request, seller_id)
        side = await read_side(state)
        view = await wait_for(side.warehouse, min_position)
        s = side.warehouse.schema
        with store_errors():
            rows = await side.pool.fetch(
                "SELECT f.product_id, sum(f.quantity)::bigint AS quantity, sum(f.revenue)::bigint AS revenue,"
                " count(DISTINCT f.order_id) AS orders,"
                f' (SELECT p.name FROM "{s}".dim_product p WHERE p.product_id = f.product_id'
                "  ORDER BY p.version DESC LIMIT 1) AS name"
                f' FROM "{s}".fact_order_line f JOIN "{s}".dim_date d USING (date_key)'
                " WHERE d.date BETWEEN $1 AND $2"
                + (
                    ""
                    if seller is None
                    else f' AND f.product_id IN (SELECT product_id FROM "{s}".product_seller'
                    " WHERE seller_id = $4)"
                )
                + f" GROUP BY f.product_id ORDER BY {by} DESC, f.product_id LIMIT $3",
                *_days(start, end),
                limit,
                *([] if seller is None else [seller]),
            )
        result = [
            TopProduct(
                product_id=r["product_id"],
                name=r["name"] or "",
                quantity=r["quantity"],
                revenue=r["revenue"],
                orders=r["orders"],
            )
            for r in rows
        ]
        return view_response(result, view)

    @get(
        "/funnel",
        guards=[admin_only],
        operation_id="funnelPerPeriod",
        responses=problem_responses(400, 401, 403),
    )
    async def funnel(
        self,
        state: State,
        granularity: Annotated[Literal["day", "week", "month"], QueryParameter()] = "day",
        start: From = None,
        end: To = None,
        min_position: MinPosition = None,
    ) -> Response[list[FunnelPeriod]]:
        """Carts, checkouts, paid, shipped and delivered orders per period, the cancellation
        and expiry rates, and the time to ship (p50 / p95)."""
        side = await read_side(state)
        view = await wait_for(side.warehouse, min_position)
        s, period = side.warehouse.schema, PERIODS[granularity]
        counted = ("awaiting_payment", "paid", "shipped", "delivered", "cancelled", "expired")
        counts = ", ".join(
            f"count(*) FILTER (WHERE f.status = '{name}') AS {name}" for name in counted
        )
        with store_errors():
            rows = await side.pool.fetch(
                f"WITH steps AS (SELECT {period} AS period, {counts}"
                f' FROM "{s}".fact_order_status f JOIN "{s}".dim_date d USING (date_key)'
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY 1),"
                f" carts AS (SELECT {period} AS period, count(DISTINCT c.account_id) AS carts"
                f' FROM "{s}".fact_cart_day c JOIN "{s}".dim_date d USING (date_key)'
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY 1),"
                f" ships AS (SELECT {period} AS period,"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM x.at - p.at)) AS p50,"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM x.at - p.at)) AS p95"
                f' FROM "{s}".fact_shipment x JOIN "{s}".fact_payment p'
                "  ON p.order_id = x.order_id AND p.status = 'captured'"
                f' JOIN "{s}".dim_date d ON d.date_key = x.date_key'
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY 1)"
                " SELECT * FROM steps FULL JOIN carts USING (period) FULL JOIN ships USING (period)"
                " ORDER BY 1",
                *_days(start, end),
            )

        def n(row: Any, name: str) -> int:
            return int(row[name] or 0)

        result = [
            FunnelPeriod(
                period=r["period"],
                carts=n(r, "carts"),
                checkouts=n(r, "awaiting_payment"),
                paid=n(r, "paid"),
                shipped=n(r, "shipped"),
                delivered=n(r, "delivered"),
                cancelled=n(r, "cancelled"),
                expired=n(r, "expired"),
                cancellation_rate=n(r, "cancelled") / max(n(r, "awaiting_payment"), 1),
                expiry_rate=n(r, "expired") / max(n(r, "awaiting_payment"), 1),
                ship_p50_seconds=r["p50"],
                ship_p95_seconds=r["p95"],
            )
            for r in rows
        ]
        return view_response(result, view)

    @get(
        "/logins",
        guards=[admin_only],
        operation_id="loginsPerDay",
        responses=problem_responses(400, 401, 403),
    )
    async def logins(
        self,
        state: State,
        start: From = None,
        end: To = None,
        min_position: MinPosition = None,
    ) -> Response[list[LoginDay]]:
        """Successful and failed logins per day."""
        side = await read_side(state)
        view = await wait_for(side.warehouse, min_position)
        s = side.warehouse.schema
        with store_errors():
            rows = await side.pool.fetch(
                "SELECT d.date, sum(l.successes)::bigint AS successes, sum(l.failures)::bigint AS failures"
                f' FROM "{s}".fact_login l JOIN "{s}".dim_date d USING (date_key)'
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY d.date ORDER BY d.date",
                *_days(start, end),
            )
        result = [
            LoginDay(date=r["date"], successes=r["successes"], failures=r["failures"]) for r in rows
        ]
        return view_response(result, view)
