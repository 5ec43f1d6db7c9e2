"""End-to-end tests over HTTP. Shared API fixtures and helpers live here: a ``test_api_*``
module imports ``api_fixture`` / ``settings_fixture`` to use the ``api`` / ``settings``
fixtures. Each test builds the real app against the real Redis under its own key prefix
(cleaned by the ``store`` fixture)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from app.commands import execute
from app.commands.accounts import SignUp
from app.main import create_app
from app.passwords import Passwords
from app.settings import AuthSettings, RedisSettings, Settings
from events.store import EventStore, Metadata
from tests.conftest import REDIS_URL

TEST_JWT_SECRET = "streamshop-e2e-secret-0123456789abcdef"
PASSWORD = "correct horse battery"
PROBLEM_JSON = "application/problem+json"


TEST_AUTH = AuthSettings(
    jwt_secret=TEST_JWT_SECRET, argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1
)
"""argon2id with the cheapest parameters: the tests check behaviour, not hashing cost."""


def api_settings(prefix: str, store: EventStore | None = None) -> Settings:
    """Real Redis under the test's prefix (4 partitions, like the ``store`` fixture); the
    Redis Cluster when ``store`` is on one (a module parametrised ``single_and_cluster``)."""
    redis = RedisSettings(url=REDIS_URL, prefix=prefix, partitions=4)
    if store is not None and store.clustered:
        node = store.redis.get_nodes()[0]
        redis = RedisSettings(
            url=f"redis://{node.host}:{node.port}/0", prefix=prefix, partitions=4, cluster=True
        )
    return Settings(
        redis=redis,
        auth=TEST_AUTH,
        log_format="json",
    )


@pytest.fixture(name="settings")
def settings_fixture(prefix: str) -> Settings:
    return api_settings(prefix)


@pytest.fixture(name="api")
async def api_fixture(prefix: str, store: EventStore) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app over ASGI, lifespan included. ``store`` (same prefix) cleans the keys after."""
    async with AsyncTestClient(app=create_app(api_settings(prefix, store))) as client:
        yield client


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(resp: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is problem+json with the given status (and type), never a 5xx."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["type"].startswith("https://streamshop.dev/problems/")
    assert body["detail"]
    if slug is not None:
        assert body["type"].endswith("/" + slug), body
    return body


async def sign_up(
    api: AsyncTestClient[Any], email: str | None = None, password: str = PASSWORD
) -> tuple[str, str]:
    """A new customer: (account id, email)."""
    email = email or new_email()
    resp = await api.post("/accounts", json={"name": "Ana", "email": email, "password": password})
    assert resp.status_code == 201, resp.text
    return resp.json()["account_id"], email


async def log_in(api: AsyncTestClient[Any], email: str, password: str = PASSWORD) -> str:
    resp = await api.post("/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


async def customer(api: AsyncTestClient[Any]) -> tuple[str, dict[str, str]]:
    """A signed-in customer: (account id, auth headers)."""
    account_id, email = await sign_up(api)
    return account_id, bearer(await log_in(api, email))


async def admin(api: AsyncTestClient[Any], store: EventStore) -> dict[str, str]:
    """An admin, created through the command path like ``streamshop create-admin``.

    Uses the test's own ``store``: the app's Redis client lives on the test client's loop.
    """
    email = new_email()
    password_hash = await Passwords(TEST_AUTH).hash(PASSWORD)
    command = SignUp(email=email, name="Admin", password_hash=password_hash, role="admin")
    await execute(store, command, Metadata(actor="test"))
    return bearer(await log_in(api, email))


async def create_product(
    api: AsyncTestClient[Any], admin_headers: dict[str, str], **fields: Any
) -> str:
    body = {"sku": f"SKU-{uuid.uuid4().hex[:8]}", "name": "Caneca", "price": 2590, "stock": 10}
    body.update(fields)
    resp = await api.post("/products", json=body, headers=admin_headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["product_id"])


async def events_of_type(store: EventStore, event_type: str) -> list[Any]:
    return [e async for e in store.read_all() if e.type == event_type]
