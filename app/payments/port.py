"""The payment port: what the shop needs from a card acquirer, in four idempotent calls.

Every call carries an idempotency key the shop derives from its own log, so a retry of any
step (a lost answer, a crashed API, two tabs paying at once) reaches the provider with the
same key and the provider answers with the first outcome instead of charging again:

- ``authorize``: ``<order id>:attempt:<n>``, where ``n`` is the order's next payment attempt
  (declines and the payment are recorded per attempt, so a new attempt needs a new key
  and a retried one reuses it);
- ``capture`` / ``void``: the authorization id;
- ``refund``: the refund id (``<order id>-r<n>``) or ``<order id>:cancel``.

Amounts are integer minor units. A real provider is one more class with these methods; its
asynchronous confirmations (a webhook) would be turned into the same commands
(``RecordPayment`` / ``RecordPaymentDeclined``) keyed by the same attempt, which the order's
version makes exactly-once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


class ProviderTimeout(Exception):
    """The provider did not answer in time: the outcome is unknown until retried with the key."""


@dataclass(frozen=True, slots=True)
class Authorization:
    id: str
    status: Literal["approved", "declined"]
    amount: int
    reason: str = ""


class PaymentProvider(Protocol):
    name: str

    async def authorize(
        self, key: str, amount: int, currency: str, card_token: str
    ) -> Authorization: ...

    async def capture(self, authorization_id: str) -> None: ...

    async def void(self, authorization_id: str) -> None: ...

    async def refund(self, key: str, authorization_id: str, amount: int) -> None: ...
