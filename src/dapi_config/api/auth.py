"""The admin token (§11): when ``api.admin_token`` (or ``DAPI_API__ADMIN_TOKEN``) is set, every
``/admin/v1`` route needs ``Authorization: Bearer <token>``; 401 otherwise.

The check runs twice, by design: :class:`AdminTokenMiddleware` enforces it for every path
under ``/admin/v1`` before the request reaches the router (so a client without the token gets
401 even for a malformed body or an unknown path, never a hint from parsing), and
:func:`require_admin_token` is a dependency of the ``/admin/v1`` router, which documents the
scheme in OpenAPI and guards any route even if the middleware were left out.

``/livez``, ``/healthz``, ``/readyz``, ``/metrics``, ``/docs`` and ``/openapi.json`` stay open:
probes and Prometheus scrapers carry no token, and none of them returns state or secrets. The
token is read once when the app is built; change it by restarting the service.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from dapi_config.api.errors import error_response

log = logging.getLogger("dapi_config.api")

#: Documents the scheme in OpenAPI (the "Authorize" button of /docs); never errors by itself.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="api.admin_token (or DAPI_API__ADMIN_TOKEN), when set",
)


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dapi-config"'}
_MISSING = "missing admin token: send the header Authorization: Bearer <token>"
_WRONG = "wrong admin token"


def no_token_warning(host: str) -> str:
    """What ``serve`` logs, and the console shows, when the admin API has no token."""
    return (
        f"the admin API on {host} has no admin token: anyone who can reach the port can "
        "change the node registry; set api.admin_token or DAPI_API__ADMIN_TOKEN"
    )


def expected_token(token: str | None) -> bytes | None:
    """The token to require, as bytes (None: the admin API is open)."""
    if token is None or token == "":
        return None
    return token.encode("utf-8")


async def require_admin_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Reject the request with 401 unless it carries the configured bearer token.

    The comparison is constant-time (``hmac.compare_digest``). The message never echoes what the
    client sent.
    """
    expected: bytes | None = request.app.state.admin_token
    if expected is None:
        return
    if credentials is None:
        raise _unauthorized(_MISSING)
    if not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
        raise _unauthorized(_WRONG)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers=_CHALLENGE)


def check_authorization(header: bytes | None, expected: bytes) -> str | None:
    """None when ``header`` is ``Bearer <expected>``, else the 401 message (constant-time)."""
    if header is None:
        return _MISSING
    scheme, _, credentials = header.partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return _MISSING
    if not hmac.compare_digest(credentials.strip(), expected):
        return _WRONG
    return None


class AdminTokenMiddleware:
    """401 for any request under ``prefix`` without the bearer token, before routing or body
    parsing. Does nothing when no token is configured."""

    def __init__(self, app: ASGIApp, *, prefix: str, expected: bytes | None) -> None:
        self.app = app
        self.prefix = prefix
        self.expected = expected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or not self._guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        problem = check_authorization(header, self.expected)
        if problem is None:
            await self.app(scope, receive, send)
            return
        response = error_response(401, problem, "unauthorized", headers=dict(_CHALLENGE))
        await response(scope, receive, send)

    def _guarded(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


def without_security(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI ``document`` of a service with no admin token: no operation requires the
    bearer scheme (a client, or a fuzzer, reading the document must not expect a 401)."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
    document.get("components", {}).pop("securitySchemes", None)
    return document
