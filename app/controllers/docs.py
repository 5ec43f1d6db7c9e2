"""``/docs``: Swagger UI served with its assets from the ``swagger-ui-bundle-v2`` package.

No page of the API docs loads anything from another host, so they work offline and under a
strict Content-Security-Policy. ``/schema`` (the OpenAPI document and its renderers) stays.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import Response
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from app.auth import PUBLIC

ASSETS = "/docs/assets"


def local_swagger() -> SwaggerRenderPlugin:
    """Litestar's Swagger UI renderer pointed at the bundled assets instead of a CDN."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
    )


docs_assets = create_static_files_router(
    path=ASSETS, directories=[swagger_ui_path], name="docs_assets", opt=PUBLIC
)

_SWAGGER = local_swagger()


@get("/docs", opt=PUBLIC, include_in_schema=False, sync_to_thread=False)
def docs(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Swagger UI over this API's OpenAPI document."""
    schema = request.app.openapi_schema.to_schema()
    return Response(_SWAGGER.render(request, schema), media_type="text/html")
