"""``/docs`` renders Swagger UI whose every asset comes from this server (no other host)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.e2e import api_fixture  # noqa: F401

ASSET = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/schema/swagger"])
async def test_swagger_ui_loads_only_assets_this_server_serves(
    api: AsyncTestClient[Any], page: str
) -> None:
    resp = await api.get(page)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assets = ASSET.findall(resp.text)
    assert len(assets) >= 4, assets  # css, bundle, preset, favicon
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url
        got = await api.get(url)
        assert got.status_code == 200, url
        assert got.content, url
    assert "SwaggerUIBundle(" in resp.text
    assert '"openapi"' in resp.text
