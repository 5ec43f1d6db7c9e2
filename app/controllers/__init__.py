"""Every route of the API, in one list (the query API appends its controllers here)."""

from __future__ import annotations

from typing import Any

from app.controllers.accounts import login, logout, refresh, sign_up
from app.controllers.accounts_profile import (
    change_my_password,
    deactivate_account,
    forget_account,
    forget_my_account,
    reactivate_account,
    update_my_account,
)
from app.controllers.cart import CartController
from app.controllers.categories import CategoryController
from app.controllers.dashboard import DASHBOARD_ROUTES
from app.controllers.docs import docs, docs_assets
from app.controllers.feed import stream_events, stream_order_events
from app.controllers.health import health, ready
from app.controllers.legacy import (
    atualizar_cliente,
    criar_conta,
    desativar_cliente,
    esquecer_cliente,
    esquecer_meu_cadastro,
    faturar_pedido,
    listar_clientes,
    login_legado,
    obter_cliente,
    obter_meu_cadastro,
    reativar_cliente,
    trocar_senha,
)
from app.controllers.legacy_lifecycle import LEGACY_LIFECYCLE_ROUTES
from app.controllers.lifecycle import LIFECYCLE_ROUTES
from app.controllers.orders import bill_order
from app.controllers.payments_webhook import payment_webhook
from app.controllers.products import ProductController
from app.controllers.sellers import create_seller
from app.metrics import metrics
from app.queries import QUERY_CONTROLLERS

CONTROLLERS: list[Any] = [
    health,
    ready,
    metrics,
    docs,
    docs_assets,
    *DASHBOARD_ROUTES,
    stream_events,
    stream_order_events,
    sign_up,
    login,
    refresh,
    logout,
    update_my_account,
    change_my_password,
    deactivate_account,
    reactivate_account,
    forget_my_account,
    forget_account,
    ProductController,
    CategoryController,
    create_seller,
    bill_order,
    CartController,
    *LIFECYCLE_ROUTES,
    payment_webhook,
    criar_conta,
    login_legado,
    faturar_pedido,
    atualizar_cliente,
    trocar_senha,
    obter_meu_cadastro,
    listar_clientes,
    obter_cliente,
    desativar_cliente,
    reativar_cliente,
    esquecer_meu_cadastro,
    esquecer_cliente,
    *LEGACY_LIFECYCLE_ROUTES,
    *QUERY_CONTROLLERS,
]
