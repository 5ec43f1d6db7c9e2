"""The producer contract: the checked-in JSON Schemas are the ones the gateway validates with."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from events.schemas import SCHEMA_DIR, render
from events.types import CATALOG_EVENT_TYPES, EVENT_TYPES
from workers.ingest_contract import Invalid, validate


@pytest.mark.parametrize("name", sorted(CATALOG_EVENT_TYPES))
def test_the_published_json_schema_of_each_catalog_type_is_current(name: str) -> None:
    checked_in = (SCHEMA_DIR / f"{name}.json").read_bytes()
    assert checked_in == render()[f"{name}.json"], "run `streamshop schemas` and commit"
    schema = msgspec.json.decode(checked_in)
    assert schema["x-schema-version"] == EVENT_TYPES[name].SCHEMA


def _fields(data: dict[str, object], **extra: str) -> dict[bytes, bytes]:
    fields = {"id": str(uuid.uuid4()), "type": "ProductCreated", "schema": "1", **extra}
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    raw[b"data"] = msgspec.json.encode(data)
    return raw


def test_the_documented_example_is_valid() -> None:
    product_id = "0192f0c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f"
    data = {
        "product_id": product_id,
        "sku": "MUG-001",
        "name": "Caneca",
        "price": 3990,
        "stock": 25,
    }
    ingested = validate("erp", _fields(data, actor="erp"))
    assert ingested.event.aggregate() == f"product:{product_id}"
    assert ingested.meta.source == "ingest:erp"
    assert ingested.meta.actor == "erp"
    assert ingested.meta.correlation == ingested.event_id


def test_the_event_id_is_normalised_so_case_does_not_defeat_dedup() -> None:
    event_id = str(uuid.uuid4())
    data = {"product_id": str(uuid.uuid4()), "sku": "S", "name": "N", "price": 1}
    fields = _fields(data)
    fields[b"id"] = event_id.upper().encode()
    assert validate("erp", fields).event_id == event_id


def test_a_bad_field_deep_in_data_is_named_by_its_path() -> None:
    data = {"product_id": str(uuid.uuid4()), "sku": "S", "name": "N", "price": 1, "legacy_id": "x"}
    with pytest.raises(Invalid) as err:
        validate("erp", _fields(data))
    assert err.value.field == "data.legacy_id"


def test_a_nul_in_data_or_metadata_is_invalid_naming_the_field() -> None:
    """PostgreSQL text cannot hold NUL: such an entry is dead-lettered, never appended."""
    data = {"product_id": str(uuid.uuid4()), "sku": "S", "name": "Café\x00moído", "price": 1}
    with pytest.raises(Invalid) as err:
        validate("erp", _fields(data))
    assert err.value.field == "data.name"
    assert "NUL" in err.value.reason
    fields = _fields({**data, "name": "Café moído"})
    fields[b"actor"] = b"erp\x00"
    with pytest.raises(Invalid) as err:
        validate("erp", fields)
    assert err.value.field == "actor"
