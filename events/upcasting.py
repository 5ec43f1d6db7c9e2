"""Upcasters: turn a stored event of an older schema into the shape of the current one.

Producers always write the newest schema; old entries stay in the log untouched and are
upcast every time they are read, by the live projectors and by a replay alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""``(type, from_schema)`` → function returning the data at ``from_schema + 1``."""


def upcaster(event_type: str, from_schema: int) -> Callable[[Upcaster], Upcaster]:
    """Register a one-step upcaster; chains of them take any old version to the current one."""

    def register(func: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_schema)] = func
        return func

    return register


def upcast(event_type: str, schema: int, target: int, data: dict[str, Any]) -> dict[str, Any]:
    """Apply the registered steps from ``schema`` up to ``target``; ``KeyError`` if one is missing."""
    while schema < target:
        data = UPCASTERS[(event_type, schema)](data)
        schema += 1
    return data


@upcaster("OrderBilled", 1)
def order_billed_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 lines had ``price`` and no ``line_total``; schema 2 names it ``unit_price``."""
    lines = []
    for line in data.get("lines", []):
        line = dict(line)
        price = line.pop("price")
        line["unit_price"] = price
        line.setdefault("line_total", price * line["quantity"])
        lines.append(line)
    return {**data, "lines": lines}


@upcaster("AccountCreated", 1)
def account_created_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 held email and name in clear and had no digest: the text stays (clear text
    opens as itself) and the digest is the unkeyed one schema 1 reservations were made with."""
    from events.keys import digest

    return {**data, "email_digest": data.get("email_digest") or digest(data["email"])}


@upcaster("AccountProfileChanged", 1)
def account_profile_changed_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 held the address as an object; schema 2 holds it as (sealed) JSON text."""
    address = data.get("shipping_address")
    if isinstance(address, dict):
        return {**data, "shipping_address": msgspec.json.encode(address).decode()}
    return data
