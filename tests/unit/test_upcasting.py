"""Upcasters: old stored shapes become the current one, step by step."""

from __future__ import annotations

from typing import Any

import pytest

from events.types import EVENT_TYPES
from events.upcasting import UPCASTERS, order_billed_v1_to_v2, upcast, upcaster


def test_order_billed_v1_lines_get_unit_price_and_line_total() -> None:
    v1 = {"order_id": "o", "lines": [{"product_id": "p", "quantity": 3, "price": 250}]}
    v2 = order_billed_v1_to_v2(v1)
    assert v2["lines"] == [{"product_id": "p", "quantity": 3, "unit_price": 250, "line_total": 750}]
    assert v1["lines"][0]["price"] == 250, "the stored data is not modified in place"


def test_an_existing_line_total_is_kept() -> None:
    v1 = {"lines": [{"quantity": 2, "price": 100, "line_total": 150}]}
    assert order_billed_v1_to_v2(v1)["lines"][0]["line_total"] == 150


def test_upcast_to_the_same_version_is_the_identity() -> None:
    data = {"a": 1}
    assert upcast("OrderBilled", 2, 2, data) is data


def test_upcasters_chain_over_several_versions() -> None:
    @upcaster("ChainTest", 1)
    def one(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "steps": [*data["steps"], 1]}

    @upcaster("ChainTest", 2)
    def two(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "steps": [*data["steps"], 2]}

    try:
        assert upcast("ChainTest", 1, 3, {"steps": []}) == {"steps": [1, 2]}
    finally:
        del UPCASTERS[("ChainTest", 1)], UPCASTERS[("ChainTest", 2)]


def test_a_missing_step_raises_key_error() -> None:
    with pytest.raises(KeyError):
        upcast("ProductDeleted", 1, 2, {})


def test_every_type_above_schema_1_can_be_reached_from_schema_1() -> None:
    for name, cls in EVENT_TYPES.items():
        for version in range(1, cls.SCHEMA):
            assert (name, version) in UPCASTERS, f"{name} v{version} has no upcaster"
