"""Commands of the write side: pure decisions over typed states, and one runner that executes them.

``DECIDERS`` is the one route table, command type → :class:`~app.commands.runner.Decider`;
:func:`execute` is the single entry point used by the HTTP controllers, the CLI
(``create-admin``, ``demo``), the ingress gateway and login
(:func:`app.commands.login.log_in` checks the password, then records the attempt here).
"""

from __future__ import annotations

from typing import Any

from app.commands.accounts import SIGN_UP, SignUp
from app.commands.billing import BILL_ORDER, BillOrder
from app.commands.cart import REMOVE_CART_ITEM, SET_CART_ITEM, RemoveCartItem, SetCartItem
from app.commands.catalog import (
    ADJUST_STOCK,
    CREATE_PRODUCT,
    DELETE_PRODUCT,
    UPDATE_PRODUCT,
    AdjustStock,
    CreateProduct,
    DeleteProduct,
    UpdateProduct,
)
from app.commands.categories import (
    CREATE_CATEGORY,
    DELETE_CATEGORY,
    RENAME_CATEGORY,
    CreateCategory,
    DeleteCategory,
    RenameCategory,
)
from app.commands.checkout import CHECKOUT, Checkout
from app.commands.checkout_saga import check_out
from app.commands.colocation import colocate
from app.commands.email_digest import UPGRADE_EMAIL_DIGEST, UpgradeEmailDigest
from app.commands.login import RECORD_LOGIN, RecordLogin
from app.commands.orders import (
    CANCEL_ORDER,
    EXPIRE_ORDER,
    ISSUE_REFUND,
    MARK_DELIVERED,
    RECORD_PAYMENT,
    RECORD_PAYMENT_DECLINED,
    SHIP_ORDER,
    CancelOrder,
    ExpireOrder,
    IssueRefund,
    MarkDelivered,
    RecordPayment,
    RecordPaymentDeclined,
    ShipOrder,
)
from app.commands.profile import (
    CHANGE_PASSWORD,
    CHANGE_PROFILE,
    DEACTIVATE_ACCOUNT,
    FORGET_CUSTOMER,
    REACTIVATE_ACCOUNT,
    ChangePassword,
    ChangeProfile,
    DeactivateAccount,
    ForgetCustomer,
    ReactivateAccount,
)
from app.commands.runner import Decider, run
from app.commands.saga import bill
from events.store import AppendResult, EventStore, Metadata

DECIDERS: dict[type[Any], Decider[Any]] = {
    SignUp: SIGN_UP,
    RecordLogin: RECORD_LOGIN,
    ChangeProfile: CHANGE_PROFILE,
    ChangePassword: CHANGE_PASSWORD,
    DeactivateAccount: DEACTIVATE_ACCOUNT,
    ReactivateAccount: REACTIVATE_ACCOUNT,
    ForgetCustomer: FORGET_CUSTOMER,
    UpgradeEmailDigest: UPGRADE_EMAIL_DIGEST,
    CreateProduct: CREATE_PRODUCT,
    UpdateProduct: UPDATE_PRODUCT,
    DeleteProduct: DELETE_PRODUCT,
    AdjustStock: ADJUST_STOCK,
    CreateCategory: CREATE_CATEGORY,
    RenameCategory: RENAME_CATEGORY,
    DeleteCategory: DELETE_CATEGORY,
    BillOrder: BILL_ORDER,
    SetCartItem: SET_CART_ITEM,
    RemoveCartItem: REMOVE_CART_ITEM,
    Checkout: CHECKOUT,
    RecordPaymentDeclined: RECORD_PAYMENT_DECLINED,
    RecordPayment: RECORD_PAYMENT,
    ExpireOrder: EXPIRE_ORDER,
    CancelOrder: CANCEL_ORDER,
    IssueRefund: ISSUE_REFUND,
    ShipOrder: SHIP_ORDER,
    MarkDelivered: MARK_DELIVERED,
}


async def execute(
    store: EventStore,
    command: Any,
    meta: Metadata,
    *,
    idempotency_key: str | None = None,
    event_id: str | None = None,
) -> AppendResult:
    """Decide and append one command; raises a ``DomainError`` subclass when it is refused.

    The result's ``result`` is the command's outcome as JSON (``{"account_id"}``,
    ``{"product_id"}``, the billing receipt, the login outcome), on a first append and on a
    replay alike. ``event_id`` becomes the id of the (single) event appended, so an ingested
    message keeps its producer's id.
    """
    if isinstance(command, BillOrder) and event_id is None:
        # On a Redis Cluster, an order whose keys span slots is billed by a saga.
        return await bill(store, command, meta, idempotency_key=idempotency_key)
    if isinstance(command, Checkout) and store.clustered and event_id is None:
        return await check_out(store, command, meta, idempotency_key=idempotency_key)
    if store.clustered:
        command = colocate(store, command)
    decider = DECIDERS.get(type(command))
    if decider is None:
        raise TypeError(f"no decider for {type(command).__name__}")
    return await run(
        decider, store, command, meta, idempotency_key=idempotency_key, event_id=event_id
    )
