"""Schemathesis over a live server's own OpenAPI document, for a chosen set of operations."""

from __future__ import annotations

from collections.abc import Collection

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
"""No 5xx, and every response (status, content type, body) conforms to the document."""


def fuzz_operations(
    base_url: str, operation_ids: Collection[str], headers: dict[str, str], max_examples: int
) -> None:
    """Run a bounded number of generated cases against each named operation; raises on the
    first failing check. Asserts every named operation is in the document."""
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().definition.raw.get("operationId") in operation_ids
    ]
    assert len(operations) == len(operation_ids)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

        fuzz()
