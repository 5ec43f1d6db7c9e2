"""Schemathesis over the seller and category queries of issue 15 and the sales routes a
seller shares, on the production server with its read side (test_views_schema's
``live_url``)."""

from __future__ import annotations

import uuid

from app.auth import build_jwt_auth, issue_token
from tests.e2e import api_settings
from tests.e2e.test_views_schema import live_url  # noqa: F401
from tests.e2e.test_views_support import pg_database_fixture  # noqa: F401
from tests.support.fuzz import fuzz_operations

QUERIES = {"listSellers", "listCategories", "salesPerPeriod", "topProducts", "listProducts"}
SELLER_QUERIES = {"salesPerPeriod", "topProducts"}


def test_schemathesis_finds_no_server_error_on_the_seller_and_category_queries(
    live_url: str,  # noqa: F811
    prefix: str,
) -> None:
    auth = build_jwt_auth(api_settings(prefix))
    admin = issue_token(auth, str(uuid.uuid4()), "admin", 600)
    fuzz_operations(live_url, QUERIES, {"Authorization": f"Bearer {admin}"}, 10)
    seller = issue_token(auth, str(uuid.uuid4()), "seller", 600)
    fuzz_operations(live_url, SELLER_QUERIES, {"Authorization": f"Bearer {seller}"}, 10)
