"""Schemathesis over the account and session routes of issue 15, on the production server
(``uvicorn --factory app.main:create_app``, the ``live`` fixture of test_api_server)."""

from __future__ import annotations

from tests.e2e.test_api_server import LiveServer, live  # noqa: F401
from tests.support.fuzz import fuzz_operations

ACCOUNT_OPERATIONS = {
    "refreshSession",
    "logout",
    "updateMyAccount",
    "changeMyPassword",
    "deactivateAccount",
    "reactivateAccount",
    "forgetMyAccount",
    "forgetAccount",
    "atualizarCliente",
    "trocarSenha",
    "desativarCliente",
    "reativarCliente",
    "esquecerMeuCadastro",
    "esquecerCliente",
}
"""The write-side routes; the account queries need the read side (test_views_schema's)."""


def test_schemathesis_finds_no_server_error_in_the_account_routes(live: LiveServer) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {live.admin_token()}"}
    fuzz_operations(live.url, ACCOUNT_OPERATIONS, headers, max_examples=12)
