"""The operator console (§14): one page at ``/`` (and ``/console``) that shows the node's
configuration at a glance and changes it safely.

The server renders the page from a Jinja2 template with no state in it; ``console.js`` (plain
JavaScript of our own, no build step, shipped inside the package with ``console.css``) reads
and changes everything through the same ``/admin/v1`` routes as any other client. The admin
token the operator types into the login form is kept in ``sessionStorage``: this browser tab's
session only, sent as the ``Authorization`` header, never in a URL, a cookie or a log.
State-changing requests from other origins are refused (:class:`.middleware.CrossOriginGuard`),
and the page's Content-Security-Policy allows scripts, styles and requests to this origin only,
with no inline script: the console works on a node with no internet access.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from dapi_config import __version__
from dapi_config.access import no_token_warning
from dapi_config.api.errors import error_response
from dapi_config.catalogue import KINDS
from dapi_config.errors import DapiConfigError

if TYPE_CHECKING:
    import jinja2

router = APIRouter(include_in_schema=False)

_HERE = Path(__file__).parent
_STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: Paths this module serves, for the request metrics' route labels.
CONSOLE_PATHS = (
    "/",
    "/console",
    "/favicon.ico",
    *(f"/console/static/{name}" for name in _STATIC),
)

_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@functools.cache
def _templates() -> jinja2.Environment:
    # Jinja2 is loaded with the first page view: a service nobody opens the console of does
    # not carry it (about 1.6 MiB resident).
    import jinja2  # noqa: PLC0415

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


@router.get("/", response_class=HTMLResponse)
@router.get("/console", response_class=HTMLResponse)
def console_page(request: Request) -> HTMLResponse:
    """The console page (the same for everyone: the state comes after login, from the API)."""
    try:
        token_required = request.app.state.credentials.needs_token()
    except DapiConfigError:
        token_required = True  # the state cannot say: ask for one rather than show none
    host = request.headers.get("host", "this port")
    page = (
        _templates()
        .get_template("console.html")
        .render(
            version=__version__,
            token_required=token_required,
            # The values the State panel edits, straight from the catalogue.
            kinds=[
                {
                    "name": kind.name,
                    "path": kind.path,
                    "summary": kind.summary,
                    "clearable": kind.clear is not None,
                }
                for kind in KINDS
                if not kind.collection
            ],
            warning=None if token_required else no_token_warning(host),
        )
    )
    return HTMLResponse(page, headers=_HEADERS)


@router.get("/favicon.ico")
def favicon() -> Response:
    """The console's icon, where browsers look for it first (a 404 there fills their logs)."""
    return console_asset("favicon.svg")


@router.get("/console/static/{name}")
def console_asset(name: str) -> Response:
    """The console's own script and style sheet (404 for anything else)."""
    media_type = _STATIC.get(name)
    if media_type is None:
        return error_response(404, f"no console asset {name!r}", "not_found")
    body = (_HERE / "static" / name).read_bytes()
    return Response(body, media_type=media_type, headers=_HEADERS)
