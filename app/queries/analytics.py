"""Admin analytics over the warehouse: sales per period, top products, logins per day.

``from`` and ``to`` are dates (UTC days), both inclusive; either may be left out.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from app.auth import admin_only
from app.problems import problem_responses
from app.queries.consistency import MinPosition, view_response, wait_for
from app.queries.cursors import bad_param
from app.queries.read_side import read_side, store_errors

From = Annotated[date | None, QueryParameter(name="from", required=False, description="First day.")]
To = Annotated[date | None, QueryParameter(name="to", required=False, description="Last day.")]

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


class LoginDay(msgspec.Struct, frozen=True, kw_only=True):
    date: date
    successes: int
    failures: int


def _days(start: date | None, end: date | None) -> tuple[date, date]:
    if start is not None and end is not None and start > end:
        raise bad_param("from", "from is after to")
    return start or date(1, 1, 1), end or date(9999, 12, 31)


class AnalyticsController(Controller):
    path = "/analytics"
    guards = [admin_only]
    tags = ["analytics"]

    @get(
        "/sales",
        operation_id="salesPerPeriod",
        responses=problem_responses(400, 401, 403),
    )
    async def sales(
        self,
        state: State,
        granularity: Annotated[Literal["day", "week", "month"], QueryParameter()] = "day",
        start: From = None,
        end: To = None,
        min_position: MinPosition = None,
    ) -> Response[list[SalesPeriod]]:
        """Orders, items and revenue (minor units) per day, ISO week or month, with the
        refunds of the period and the net (``gross - refunds``)."""
        side = await read_side(state)
        view = await wait_for(side.warehouse, min_position)
        s, period = side.warehouse.schema, PERIODS[granularity]
        with store_errors():
            rows = await side.pool.fetch(
                f"WITH sales AS (SELECT {period} AS period, count(DISTINCT f.order_id) AS orders,"
                " sum(f.quantity)::bigint AS items, sum(f.revenue)::bigint AS revenue"
                f' FROM "{s}".fact_order_line f JOIN "{s}".dim_date d USING (date_key)'
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY 1),"
                f" refunds AS (SELECT {period} AS period, sum(r.amount)::bigint AS refunds"
                f' FROM "{s}".fact_refund r JOIN "{s}".dim_date d USING (date_key)'
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY 1)"
                " SELECT period, coalesce(orders, 0) AS orders, coalesce(items, 0) AS items,"
                " coalesce(revenue, 0) AS revenue, coalesce(refunds, 0) AS refunds"
                " FROM sales FULL JOIN refunds USING (period) ORDER BY 1",
                *_days(start, end),
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
        state: State,
        start: From = None,
        end: To = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
        by: Annotated[Literal["revenue", "quantity"], QueryParameter()] = "revenue",
        min_position: MinPosition = None,
    ) -> Response[list[TopProduct]]:
        """The best sellers by revenue or by quantity, ties by product id."""
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
                " WHERE d.date BETWEEN $1 AND $2 GROUP BY f.product_id"
                f" ORDER BY {by} DESC, f.product_id LIMIT $3",
                *_days(start, end),
                limit,
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

    @get("/logins", operation_id="loginsPerDay", responses=problem_responses(400, 401, 403))
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
