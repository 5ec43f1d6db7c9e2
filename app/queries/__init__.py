"""The query API: read-only endpoints over the views, with read-your-writes waits."""

from __future__ import annotations

from typing import Any

from app.queries.accounts import get_account, list_accounts, my_account
from app.queries.analytics import AnalyticsController
from app.queries.audit import AuditController
from app.queries.carts import get_account_cart
from app.queries.categories import list_categories
from app.queries.orders import get_order, list_orders
from app.queries.products import get_product, list_products
from app.queries.read_side import read_side_lifespan
from app.queries.sellers import list_sellers

QUERY_CONTROLLERS: list[Any] = [
    my_account,
    list_accounts,
    get_account,
    list_orders,
    get_order,
    get_account_cart,
    list_products,
    get_product,
    list_categories,
    list_sellers,
    AnalyticsController,
    AuditController,
]

__all__ = ["QUERY_CONTROLLERS", "read_side_lifespan"]
