"""A sandbox acquirer, like a card processor's test mode: the card token decides the outcome.

``tok_approved`` is approved, ``tok_declined`` declined, ``tok_timeout`` never answers (and
records nothing, so the order stays payable); any other token is declined as unknown. It
keeps its ledger in memory, per API process: enough for tests and ``make run``; the figures
(:meth:`SandboxAcquirer.captured_for`) let tests check that nothing was charged twice.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from app.payments.port import Authorization, ProviderTimeout


@dataclass
class _Auth:
    auth: Authorization
    key: str
    captured: bool = False
    voided: bool = False
    refunds: dict[str, int] = field(default_factory=dict)


class SandboxAcquirer:
    name = "sandbox"

    def __init__(self) -> None:
        self._by_key: dict[str, _Auth] = {}
        self._by_id: dict[str, _Auth] = {}
        self._lock = asyncio.Lock()
        self.authorize_calls = 0

    async def authorize(
        self, key: str, amount: int, currency: str, card_token: str
    ) -> Authorization:
        async with self._lock:
            self.authorize_calls += 1
            if (seen := self._by_key.get(key)) is not None:
                return seen.auth
            if card_token == "tok_timeout":
                raise ProviderTimeout(f"sandbox: {key} timed out")
            approved = card_token == "tok_approved"
            auth = Authorization(
                id=f"auth_{uuid.uuid4().hex[:16]}",
                status="approved" if approved else "declined",
                amount=amount,
                reason="" if approved else f"card {card_token} declined",
            )
            entry = _Auth(auth=auth, key=key)
            self._by_key[key] = entry
            self._by_id[auth.id] = entry
            return auth

    async def capture(self, authorization_id: str) -> None:
        async with self._lock:
            entry = self._by_id[authorization_id]
            if entry.voided or entry.auth.status != "approved":
                raise ValueError(f"sandbox: {authorization_id} cannot be captured")
            entry.captured = True

    async def void(self, authorization_id: str) -> None:
        async with self._lock:
            entry = self._by_id[authorization_id]
            if entry.captured:
                raise ValueError(f"sandbox: {authorization_id} was captured; refund it")
            entry.voided = True

    async def refund(self, key: str, authorization_id: str, amount: int) -> None:
        async with self._lock:
            entry = self._by_id[authorization_id]
            if key in entry.refunds:
                return
            if sum(entry.refunds.values()) + amount > entry.auth.amount:
                raise ValueError(f"sandbox: refunds of {authorization_id} above its amount")
            entry.refunds[key] = amount

    def captured_for(self, order_id: str) -> int:
        """Money taken for an order and not refunded: what the customer's statement shows."""
        total = 0
        for entry in self._by_id.values():
            if entry.key.startswith(f"{order_id}:") and entry.captured:
                total += entry.auth.amount - sum(entry.refunds.values())
        return total

    def voided(self) -> int:
        """How many authorizations were voided (a payment that lost to an expiry or a cancel)."""
        return sum(e.voided for e in self._by_id.values())

    def authorizations_for(self, order_id: str) -> list[Authorization]:
        return [e.auth for e in self._by_id.values() if e.key.startswith(f"{order_id}:")]
