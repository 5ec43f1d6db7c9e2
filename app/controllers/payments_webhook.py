"""``POST /payments/webhook``: a provider confirms (or declines) a payment attempt
asynchronously, signed with HMAC-SHA256 over the raw body.

The confirmation becomes the same command as a synchronous answer (``RecordPayment`` /
``RecordPaymentDeclined`` for that attempt), so it is exactly-once by the order's version:
a confirmation of an attempt already recorded with the same authorization is answered 200
and appends nothing; one the order no longer accepts is a 409 naming its status.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, NotAuthorizedException, NotFoundException

from app.auth import PUBLIC
from app.commands import execute
from app.commands.billing import order_aggregate
from app.commands.errors import DomainError
from app.commands.orders import RecordPayment, RecordPaymentDeclined
from app.commands.runner import state_of
from app.problems import problem_responses
from app.services import services
from app.validation import reject_nul
from events.states import OrderState
from events.store import Metadata

SIGNATURE_HEADER = "X-Streamshop-Signature"


class PaymentNotice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    order_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    authorization_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    status: Literal["approved", "declined"]
    amount: Annotated[int, msgspec.Meta(ge=0)]
    provider: Annotated[str, msgspec.Meta(max_length=100)] = "webhook"
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class NoticeAccepted(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    status: str


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@post(
    "/payments/webhook",
    tags=["payments"],
    operation_id="paymentWebhook",
    status_code=200,
    opt=PUBLIC,
    responses=problem_responses(400, 401, 404, 409),
)
async def payment_webhook(request: Request[Any, Any, Any], state: State) -> NoticeAccepted:
    """A signed payment confirmation (header ``X-Streamshop-Signature: sha256=<hex>``)."""
    svc = services(state)
    secret = svc.settings.payment_webhook_secret
    if not secret:
        raise NotFoundException("the payment webhook is not configured")
    body = await request.body()
    given = request.headers.get(SIGNATURE_HEADER, "")
    if not hmac.compare_digest(given.encode(), signature(secret, body).encode()):
        raise NotAuthorizedException("bad or missing webhook signature")
    try:
        notice = msgspec.json.decode(body, type=PaymentNotice)
    except msgspec.DecodeError as exc:
        raise ClientException(f"invalid notice: {exc}") from exc
    reject_nul(msgspec.to_builtins(notice))
    meta = Metadata(actor=f"provider:{notice.provider}", source="webhook")
    if notice.status == "declined":
        command: RecordPayment | RecordPaymentDeclined = RecordPaymentDeclined(
            order_id=notice.order_id,
            attempt=notice.attempt,
            provider=notice.provider,
            reason=notice.reason,
        )
    else:
        command = RecordPayment(
            order_id=notice.order_id,
            attempt=notice.attempt,
            payment_id=notice.authorization_id,
            amount=notice.amount,
            at=int(time.time()),
            provider=notice.provider,
        )
    try:
        await execute(svc.store, command, meta)
    except DomainError:
        aggregate = order_aggregate(notice.order_id)
        order = state_of(await svc.store.load([aggregate]), aggregate, OrderState)
        if order.exists and order.payment_id == notice.authorization_id:
            return NoticeAccepted(order_id=notice.order_id, status="paid")  # a redelivery
        raise
    return NoticeAccepted(
        order_id=notice.order_id, status="paid" if notice.status == "approved" else "declined"
    )
