"""OpenTelemetry: one trace from an HTTP command through its append to the projector's apply,
carried by the event's ``correlation`` (the SDK's in-memory exporter stands in for OTLP)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.main import create_app
from app.settings import MongoSettings, Settings
from app.tracing import tracer_provider
from events.store import EventStore
from tests.e2e import api_settings, sign_up
from tests.support.projectors import eventually
from workers.registry import open_projections
from workers.runner import ProjectorRunner


@pytest.fixture(name="settings")
def settings_fixture(prefix: str, mongo_url: str, mongo_db_name: str) -> Settings:
    return dataclasses.replace(
        api_settings(prefix), mongo=MongoSettings(url=mongo_url, database=mongo_db_name)
    )


@pytest.fixture(name="exporter")
def exporter_fixture() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(name="traced_api")
async def traced_api_fixture(
    settings: Settings, store: EventStore, exporter: InMemorySpanExporter
) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings, span_exporter=exporter)) as client:
        yield client


async def test_a_command_its_append_and_the_projection_apply_are_one_trace(
    traced_api: AsyncTestClient[Any],
    settings: Settings,
    store: EventStore,
    exporter: InMemorySpanExporter,
) -> None:
    account_id, _ = await sign_up(traced_api)
    [created] = [e async for e in store.read_all() if e.type == "AccountCreated"]
    assert created.aggregate == f"account:{account_id}"

    spans = exporter.get_finished_spans()
    [command] = [s for s in spans if s.kind == SpanKind.SERVER and s.name == "POST /accounts"]
    [append] = [s for s in spans if s.name == "append"]
    assert append.parent is not None and append.parent.span_id == command.context.span_id
    assert append.context.trace_id == command.context.trace_id
    # The trace id travels in the envelope: it is the event's correlation.
    assert uuid.UUID(int=command.context.trace_id) == uuid.UUID(created.correlation)

    provider = tracer_provider(settings, exporter, service="streamshop-project")
    assert provider is not None
    redis = aioredis.Redis.from_url(settings.redis.url)
    try:
        async with open_projections(settings, ["read_models"]) as projections:
            runner = ProjectorRunner(
                redis,
                settings.redis.keys,
                projections,
                consumer=f"trace-{uuid.uuid4().hex[:6]}",
                block_ms=100,
                lease_ms=3000,
                tracer=provider.get_tracer("streamshop.projector"),
            )
            task = asyncio.create_task(runner.run())

            def applies() -> list[Any]:
                return [s for s in exporter.get_finished_spans() if s.name == "apply read_models"]

            async def applied() -> bool:
                return bool(applies())

            try:
                await eventually(applied, 60, "the projector's apply span")
            finally:
                runner.stop()
                await asyncio.wait_for(task, 30)
    finally:
        await redis.aclose()

    [apply] = applies()
    assert apply.context.trace_id == command.context.trace_id
    assert apply.parent is not None and apply.parent.span_id == command.context.span_id
    assert [link.context.span_id for link in apply.links] == [command.context.span_id]


async def test_without_an_endpoint_or_exporter_tracing_is_off(settings: Settings) -> None:
    assert tracer_provider(settings) is None
    assert create_app(settings).state.tracer is None
