"""Payments: the port (:mod:`app.payments.port`), the sandbox adapter, and the steps of the
order lifecycle that talk to the provider (:mod:`app.payments.service`)."""

from __future__ import annotations

from litestar.datastructures import State

from app.payments.port import PaymentProvider
from app.payments.sandbox import SandboxAcquirer


def payment_provider(state: State) -> PaymentProvider:
    """The app's provider, created on first use (the sandbox: it connects to nothing)."""
    provider: PaymentProvider | None = state.get("payments")
    if provider is None:
        provider = SandboxAcquirer()
        state["payments"] = provider
    return provider
