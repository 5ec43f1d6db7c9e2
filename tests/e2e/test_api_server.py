"""The API as it runs in production: ``uvicorn --factory app.main:create_app`` in its own
process, on a free port, against the real Redis; plus a schemathesis run over its OpenAPI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from scripts.servers import free_port, wait_for_port
from tests.conftest import PG_ADMIN_DSN, REDIS_URL
from tests.e2e import PASSWORD, TEST_JWT_SECRET, new_email
from tests.support.fuzz import fuzz_operations

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

WRITE_SIDE_OPERATIONS = {
    "health",
    "ready",
    "signUp",
    "login",
    "createProduct",
    "updateProduct",
    "deleteProduct",
    "adjustStock",
    "billOrder",
    "criarConta",
    "loginLegado",
    "faturarPedido",
}
"""This module fuzzes the write side; the query routes are the query API's to test."""


class LiveServer:
    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env

    def streamshop(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "streamshop"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def admin_token(self) -> str:
        email = new_email()
        done = self.streamshop("create-admin", "--email", email, "--password", PASSWORD)
        assert done.returncode == 0, done.stderr
        resp = httpx.post(f"{self.url}/auth/login", json={"email": email, "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])


@pytest.fixture(scope="module")
def live(mongo_url: str) -> Iterator[LiveServer]:
    prefix = f"sstest:live:{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "MONGO_URL": mongo_url,
        "DATABASE_URL": PG_ADMIN_DSN,
        "STREAM_PREFIX": prefix,
        "STREAM_PARTITIONS": "4",
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_FORMAT": "json",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
        "ARGON2_PARALLELISM": "1",
    }
    proc = subprocess.Popen(
        [str(BIN / "uvicorn"), "--factory", "app.main:create_app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield LiveServer(f"http://127.0.0.1:{port}", env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def test_live_server_is_ready_and_tags_responses(live: LiveServer) -> None:
    resp = httpx.get(f"{live.url}/ready", headers={"X-Request-ID": "live-1"})
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready"}
    assert resp.headers["x-request-id"] == "live-1"


def test_live_server_sign_up_login_and_bill(live: LiveServer) -> None:
    admin = {"Authorization": f"Bearer {live.admin_token()}"}
    with httpx.Client(base_url=live.url) as http:
        product = http.post(
            "/products",
            json={"sku": uuid.uuid4().hex[:12], "name": "Caneca", "price": 2590, "stock": 3},
            headers=admin,
        )
        assert product.status_code == 201, product.text
        email = new_email()
        signed = http.post("/accounts", json={"name": "Ana", "email": email, "password": PASSWORD})
        assert signed.status_code == 201, signed.text
        login = http.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        order = http.post(
            "/orders",
            json={"lines": [{"product_id": product.json()["product_id"], "quantity": 2}]},
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
        assert order.status_code == 201, order.text
        assert order.json()["total"] == 5180


def test_live_server_answers_bad_json_with_a_problem(live: LiveServer) -> None:
    resp = httpx.post(
        f"{live.url}/accounts", content=b"{", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_create_admin_refuses_an_email_held_by_a_customer(live: LiveServer) -> None:
    email = new_email()
    httpx.post(f"{live.url}/accounts", json={"name": "C", "email": email, "password": PASSWORD})
    done = live.streamshop("create-admin", "--email", email, "--password", PASSWORD)
    assert done.returncode == 1
    assert "non-admin" in done.stderr


def test_openapi_lists_every_write_route_with_its_schemas(live: LiveServer) -> None:
    doc = httpx.get(f"{live.url}/schema/openapi.json").json()
    operations = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    assert WRITE_SIDE_OPERATIONS <= set(operations)
    for name in WRITE_SIDE_OPERATIONS:
        op = operations[name]
        ok = next(code for code in op["responses"] if code.startswith("2"))
        assert "application/json" in op["responses"][ok]["content"], name
        if name not in ("health", "ready", "deleteProduct"):
            assert "application/json" in op["requestBody"]["content"], name
    assert httpx.get(f"{live.url}/schema/swagger").status_code == 200


def test_schemathesis_finds_no_server_error_and_no_schema_violation(live: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {live.admin_token()}"}
    fuzz_operations(live.url, WRITE_SIDE_OPERATIONS, headers, max_examples=12)
