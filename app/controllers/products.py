"""Catalog administration (admin or seller): create, update, delete products and adjust stock.

A seller's products carry its ``seller_id``; a seller may change only its own (another's
product answers 404, as if absent). An admin may assign a product to a seller.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, patch, post
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody, PathParameter

from app.auth import Principal, acting_seller, admin_or_seller
from app.commands import execute
from app.commands.catalog import (
    AccountId,
    AdjustStock,
    Category,
    CreateProduct,
    Currency,
    DeleteProduct,
    Delta,
    Description,
    LegacyId,
    Name,
    Price,
    Reason,
    Sku,
    Stock,
    UpdateProduct,
    product_request,
    stock_request,
)
from app.controllers.idempotency import execute_once
from app.controllers.orders import IdempotencyKey
from app.controllers.schemas import Body
from app.problems import problem_responses
from app.services import command_meta, services

ProductPath = Annotated[str, PathParameter(min_length=1, max_length=100, description="Product id.")]


class CreateProductBody(Body, frozen=True, kw_only=True):
    sku: Sku
    name: Name
    description: Description = ""
    category: Category = ""
    price: Price
    currency: Currency | None = None
    """Defaults to the shop's currency (``DEFAULT_CURRENCY``)."""
    stock: Stock = 0
    legacy_id: LegacyId | None = None
    """The product's integer id in the old Portuguese API, if it had one."""
    seller_id: AccountId | None = None
    """Admin only: the seller account that owns it (a seller's products are its own)."""


class UpdateProductBody(Body, frozen=True, kw_only=True):
    name: Name | None = None
    description: Description | None = None
    category: Category | None = None
    price: Price | None = None
    currency: Currency | None = None


class StockBody(Body, frozen=True, kw_only=True):
    delta: Delta
    reason: Reason = ""


class ProductWritten(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    position: str


def _actor(request: Request[Principal, Any, Any]) -> str:
    return f"account:{request.user.account_id}"


class ProductController(Controller):
    path = "/products"
    guards = [admin_or_seller]
    tags = ["catalog"]

    @post(
        "/",
        operation_id="createProduct",
        status_code=201,
        responses=problem_responses(400, 401, 403, 409, 413, 422),
    )
    async def create(
        self,
        request: Request[Principal, Any, Any],
        state: State,
        data: JSONBody[CreateProductBody],
        idempotency_key: IdempotencyKey = None,
    ) -> ProductWritten:
        """Add a product; price in integer minor units. A taken SKU is a 409."""
        svc = services(state)
        fields = msgspec.structs.asdict(data)
        fields["currency"] = data.currency or svc.settings.default_currency
        if (seller := acting_seller(request.user)) is not None:
            if data.seller_id not in (None, seller):
                raise PermissionDeniedException("a seller creates products for itself only")
            fields["seller_id"] = seller
        command = CreateProduct(**fields)
        result = await execute_once(
            svc.store,
            command,
            command_meta(request, _actor(request)),
            key=idempotency_key,
            scope=f"product:{request.user.account_id}",
            fingerprint=product_request(command),
        )
        return ProductWritten(
            product_id=msgspec.json.decode(result.result)["product_id"], position=result.position
        )

    @patch(
        "/{product_id:str}",
        operation_id="updateProduct",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
    )
    async def update(
        self,
        request: Request[Principal, Any, Any],
        state: State,
        product_id: ProductPath,
        data: JSONBody[UpdateProductBody],
    ) -> ProductWritten:
        """Change name, description, category, price or currency (fields left out stay)."""
        command = UpdateProduct(
            product_id=product_id, owner=acting_seller(request.user), **msgspec.structs.asdict(data)
        )
        result = await execute(
            services(state).store, command, command_meta(request, _actor(request))
        )
        return ProductWritten(product_id=product_id, position=result.position)

    @delete(
        "/{product_id:str}",
        operation_id="deleteProduct",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 409),
    )
    async def remove(
        self, request: Request[Principal, Any, Any], state: State, product_id: ProductPath
    ) -> ProductWritten:
        """Take a product out of the catalog; orders then refuse it."""
        command = DeleteProduct(product_id=product_id, owner=acting_seller(request.user))
        result = await execute(
            services(state).store, command, command_meta(request, _actor(request))
        )
        return ProductWritten(product_id=product_id, position=result.position)

    @post(
        "/{product_id:str}/stock",
        operation_id="adjustStock",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
    )
    async def adjust_stock(
        self,
        request: Request[Principal, Any, Any],
        state: State,
        product_id: ProductPath,
        data: JSONBody[StockBody],
        idempotency_key: IdempotencyKey = None,
    ) -> ProductWritten:
        """Add or remove stock by hand; stock never goes below zero (409)."""
        command = AdjustStock(
            product_id=product_id,
            delta=data.delta,
            reason=data.reason,
            owner=acting_seller(request.user),
        )
        result = await execute_once(
            services(state).store,
            command,
            command_meta(request, _actor(request)),
            key=idempotency_key,
            scope=f"stock:{product_id}:{request.user.account_id}",
            fingerprint=stock_request(command),
        )
        return ProductWritten(product_id=product_id, position=result.position)
