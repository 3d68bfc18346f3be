"""The admin token (§11): when ``api.admin_token`` (or ``DAPI_API__ADMIN_TOKEN``) is set, every
``/admin/v1`` route needs ``Authorization: Bearer <token>``; 401 otherwise.

The check is a dependency of the ``/admin/v1`` router itself, so every route mounted there is
covered, including routes added later. ``/livez``, ``/healthz``, ``/readyz``, ``/metrics``,
``/docs`` and ``/openapi.json`` stay open: probes and Prometheus scrapers carry no token, and
none of them returns state or secrets. The token is read once when the app is built; change it
by restarting the service.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

log = logging.getLogger("dapi_config.api")

#: Documents the scheme in OpenAPI (the "Authorize" button of /docs); never errors by itself.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="api.admin_token (or DAPI_API__ADMIN_TOKEN), when set",
)


def expected_token(token: str | None) -> bytes | None:
    """The token to require, as bytes (None: the admin API is open)."""
    if token is None or token == "":
        return None
    return token.encode("utf-8")


def require_admin_token(
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
        raise _unauthorized("missing admin token: send the header Authorization: Bearer <token>")
    if not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
        raise _unauthorized("wrong admin token")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="dapi-config"'})
