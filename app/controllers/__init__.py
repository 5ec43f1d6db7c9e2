"""Every route of the API, in one list (the query API appends its controllers here)."""

from __future__ import annotations

from typing import Any

from app.controllers.accounts import login, sign_up
from app.controllers.cart import CartController
from app.controllers.health import health, ready
from app.controllers.legacy import criar_conta, faturar_pedido, login_legado
from app.controllers.legacy_lifecycle import LEGACY_LIFECYCLE_ROUTES
from app.controllers.lifecycle import LIFECYCLE_ROUTES
from app.controllers.orders import bill_order
from app.controllers.payments_webhook import payment_webhook
from app.controllers.products import ProductController
from app.queries import QUERY_CONTROLLERS

CONTROLLERS: list[Any] = [
    health,
    ready,
    sign_up,
    login,
    ProductController,
    bill_order,
    CartController,
    *LIFECYCLE_ROUTES,
    payment_webhook,
    criar_conta,
    login_legado,
    faturar_pedido,
    *LEGACY_LIFECYCLE_ROUTES,
    *QUERY_CONTROLLERS,
]
