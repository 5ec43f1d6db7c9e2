"""Schemathesis over the account query routes of issue 15 (admin search, by id, legacy
aliases) on the production server with its read side (test_views_schema's ``live_url``)."""

from __future__ import annotations

import uuid

from app.auth import build_jwt_auth, issue_token
from tests.e2e import api_settings
from tests.e2e.test_views_schema import live_url  # noqa: F401
from tests.e2e.test_views_support import pg_database_fixture  # noqa: F401
from tests.support.fuzz import fuzz_operations

ACCOUNT_QUERIES = {
    "listAccounts",
    "getAccount",
    "listarClientes",
    "obterCliente",
    "obterMeuCadastro",
}


def test_schemathesis_finds_no_server_error_on_the_account_queries(
    live_url: str,  # noqa: F811
    prefix: str,
) -> None:
    token = issue_token(build_jwt_auth(api_settings(prefix)), str(uuid.uuid4()), "admin", 600)
    fuzz_operations(live_url, ACCOUNT_QUERIES, {"Authorization": f"Bearer {token}"}, 10)
