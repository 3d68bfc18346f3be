"""``/docs`` (Swagger UI) and ``/redoc``, served with their assets from this process: validator
nodes often have no internet access, and FastAPI's defaults load the UIs from a CDN and fonts
from Google (an empty page there). The assets come from ``fastapi-offline``, a maintained
package that ships them."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"
#: ReDoc's bundle as served: its menu shows Redocly's logo from a CDN, which the page's policy
#: blocks (an error in the browser's console); here the logo is the one beside the bundle.
REDOC_BUNDLE_PATH = "/docs-redoc.standalone.js"
_REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
#: Paths this module serves (besides the assets), for the request metrics' route labels.
DOC_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", REDOC_BUNDLE_PATH)

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    """``page`` with a Content-Security-Policy that lets it load only from this server.

    Should a bundle still name an outside URL, under this policy the browser does not even try
    it, so an air-gapped node makes no outbound attempt and a watched one leaks no visit. The
    page's own inline script is allowed by its hash, not by ``'unsafe-inline'``; the UIs set
    inline styles, and ReDoc runs its search in a ``blob:`` worker.
    """
    script_src = ["'self'"] + [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(bytes(page.body))
    ]
    page.headers["Content-Security-Policy"] = "; ".join(
        (
            "default-src 'self'",
            "script-src " + " ".join(script_src),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "worker-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'none'",
        )
    )
    return page


def add_offline_docs(app: FastAPI) -> None:
    """Serve the docs pages and their assets from ``app`` (created with ``docs_url=None``
    and ``redoc_url=None``)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=_ASSETS), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _with_policy(
            get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{title} - Swagger UI",
                oauth2_redirect_url="/docs/oauth2-redirect",
                swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            )
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return _with_policy(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _with_policy(
            get_redoc_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{title} - ReDoc",
                redoc_js_url=REDOC_BUNDLE_PATH,
                redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
                with_google_fonts=False,
            )
        )

    @app.get(REDOC_BUNDLE_PATH, include_in_schema=False)
    def redoc_bundle() -> Response:
        return Response(
            _redoc_bundle(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )


@functools.cache
def _redoc_bundle() -> bytes:
    bundle = (_ASSETS / "redoc.standalone.js").read_bytes()
    return bundle.replace(_REDOC_CDN_LOGO, f"{ASSETS_PATH}/favicon.png".encode())
