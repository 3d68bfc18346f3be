"""Who is calling the admin API, and may they (SPEC §11).

A request under ``/admin/v1`` is identified by its ``Authorization: Bearer <token>``:
``api.admin_token`` (or the file ``api.admin_token_file`` names) is an unnamed admin; a scoped
token (``dapi-config tokens create``) is looked up by its SHA-256 in the state on every
request, so a token created or revoked by any process or replica counts from the next request.
Once a token of either kind exists, a request without a valid one gets 401; a valid one whose
role is below the route's (:mod:`.roles`) gets 403. With no token at all the API is open, which
``serve`` allows on loopback only (or with ``--allow-unauthenticated``, or behind client
certificates: then :attr:`Credentials.required` is False).

:class:`AdminAccess` does it all before routing or body parsing (a client without the token
learns nothing from parsing), records the caller as the audit actor (``api`` or
``api:NAME``), and slows down clients that keep failing (:class:`FailureThrottle`).
:func:`authorize` is a dependency of the ``/admin/v1`` router: it checks the caller's role
against the route's (:mod:`.roles`), documents the scheme in OpenAPI, and refuses any route the
middleware did not pass.

``/livez``, ``/healthz``, ``/readyz``, ``/metrics``, ``/docs`` and ``/openapi.json`` stay open:
probes and Prometheus scrapers carry no token, and none of them returns state or secrets.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dapi_config.access import OPEN, Identity, Role, TokenInfo
from dapi_config.api.errors import ApiError, error_response, product_error_response
from dapi_config.api.metrics import ServiceMetrics
from dapi_config.api.roles import role_for
from dapi_config.errors import DapiConfigError

log = logging.getLogger("dapi_config.api")

#: Documents the scheme in OpenAPI (the "Authorize" button of /docs); never errors by itself.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="api.admin_token (or api.admin_token_file), or a token of `dapi-config tokens "
    "create`, when any is set",
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dapi-config"'}
_MISSING = "missing admin token: send the header Authorization: Bearer <token>"
_WRONG = "wrong or revoked token"
_NONE_VALID = (
    "this admin API needs a token and none exists: set api.admin_token or create one with "
    "dapi-config tokens create NAME --role admin"
)


class TokenSource(Protocol):
    """What :class:`Credentials` asks the manager."""

    def has_tokens(self) -> bool: ...

    def token_identity(self, token: str) -> TokenInfo | None: ...


class Credentials:
    """The tokens the admin API accepts: ``admin_token`` (fixed at start) and the scoped
    tokens of ``source`` (read on each request). ``required``: refuse every request while no
    token exists (a service reachable from the network that was not opened on purpose)."""

    def __init__(self, source: TokenSource, *, admin_token: str | None, required: bool) -> None:
        self.source = source
        self.admin_token = admin_token.encode("utf-8") if admin_token else None
        self.required = required

    def needs_token(self) -> bool:
        """Whether a request without a token is refused now (reads the state)."""
        return self.admin_token is not None or self.required or self.source.has_tokens()

    def matches_admin_token(self, presented: bytes) -> bool:
        """Constant-time comparison with ``api.admin_token``."""
        return self.admin_token is not None and hmac.compare_digest(presented, self.admin_token)

    def identify(self, presented: bytes | None) -> Identity | str:
        """Who presents ``presented`` (the bearer credentials, None when absent), or the 401
        message. May read the state (run it off the event loop)."""
        if presented is not None:
            if self.matches_admin_token(presented):
                return Identity(None, Role.ADMIN)
            info = self.source.token_identity(presented.decode("utf-8", "replace"))
            if info is not None:
                return Identity(info.name, info.role)
        if not self.needs_token():
            return OPEN
        if presented is not None:
            return _WRONG
        if self.admin_token is None and self.required and not self.source.has_tokens():
            return _NONE_VALID
        return _MISSING


def bearer_credentials(header: bytes | None) -> bytes | None:
    """The credentials of ``Authorization: Bearer <credentials>`` (None: absent or another
    scheme)."""
    if header is None:
        return None
    scheme, _, credentials = header.partition(b" ")
    credentials = credentials.strip()
    if scheme.lower() != b"bearer" or not credentials:
        return None
    return credentials


@dataclass
class _Burst:
    failures: int
    started: float
    last: float


class FailureThrottle:
    """Slower 401s for a client that keeps failing: after ``free`` failures within ``window``
    seconds of each other, each further 401 waits twice as long as the one before (from
    0.1 s up to ``max_delay``). One log line when a client's burst starts being slowed,
    never one per request; at most ``max_clients`` clients are remembered (the least recently
    failing are forgotten), so a scan from many addresses cannot grow it without bound."""

    def __init__(
        self,
        *,
        free: int = 5,
        window: float = 60.0,
        max_delay: float = 5.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.window = window
        self.max_delay = max_delay
        self.max_clients = max_clients
        self._clock = clock
        self._bursts: OrderedDict[str, _Burst] = OrderedDict()

    def __len__(self) -> int:
        return len(self._bursts)

    def failed(self, client: str) -> float:
        """Record a failure of ``client``; returns how long to wait before answering it."""
        now = self._clock()
        burst = self._bursts.pop(client, None)
        if burst is None or now - burst.last > self.window:
            burst = _Burst(0, now, now)
        burst.failures += 1
        burst.last = now
        self._bursts[client] = burst
        while len(self._bursts) > self.max_clients:
            self._bursts.popitem(last=False)
        over = burst.failures - self.free
        if over <= 0:
            return 0.0
        if over == 1:
            log.warning(
                "authentication: %d failures from %s in %.0f s; its answers are slowed down "
                "until it stops failing for %.0f s",
                burst.failures,
                client,
                now - burst.started,
                self.window,
            )
        return float(min(self.max_delay, 0.1 * 2 ** (over - 1)))

    def succeeded(self, client: str) -> None:
        """A valid token from ``client``: its record goes."""
        self._bursts.pop(client, None)


class Gate:
    """Who may pass: identifies callers, slows down and counts the ones that keep failing, and
    makes a caller the audit actor. Shared by :class:`AdminAccess` and the hot write routes
    (:mod:`.hot`), which identify their caller in the same trip to the thread pool as their
    write."""

    def __init__(
        self,
        *,
        credentials: Credentials,
        acting_as: Callable[[str], Any],
        metrics: ServiceMetrics,
        throttle: FailureThrottle,
    ) -> None:
        self.credentials = credentials
        self.acting_as = acting_as
        self.metrics = metrics
        self.throttle = throttle

    def known_without_state(self, presented: bytes | None) -> Identity | None:
        """The caller when the state need not be read (``api.admin_token``), else None."""
        if presented is not None and self.credentials.matches_admin_token(presented):
            return Identity(None, Role.ADMIN)
        return None

    def identify(self, presented: bytes | None) -> Identity | str:
        """The caller, or the 401 message. May read the state (run it off the event loop)."""
        return self.known_without_state(presented) or self.credentials.identify(presented)

    def passed(self, client: str) -> None:
        """A caller of ``client`` was identified (on the event loop: the throttle is not
        thread-safe)."""
        self.throttle.succeeded(client)

    async def refusal(self, message: str, client: str, presented: bool) -> JSONResponse:
        """The 401, once the client's wait (if it keeps failing) is over."""
        self.metrics.auth_failures.labels("wrong" if presented else "missing").inc()
        delay = self.throttle.failed(client)
        if delay:
            self.metrics.auth_slowed.inc()
            await asyncio.sleep(delay)
        return error_response(401, message, "unauthorized", headers=dict(_CHALLENGE))


def client_host(scope: Scope) -> str:
    """The client's address, as the failure throttle counts it."""
    return str((scope.get("client") or ("unknown", 0))[0])


class AdminAccess:
    """Identify every request under ``prefix``, check its role for the route, and make it
    the audit actor of what it writes (see the module doc)."""

    def __init__(self, app: ASGIApp, *, prefix: str, gate: Gate) -> None:
        self.app = app
        self.prefix = prefix
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guarded(scope["path"]):
            with self.gate.acting_as("api"):
                await self.app(scope, receive, send)
            return
        presented = bearer_credentials(dict(scope.get("headers") or []).get(b"authorization"))
        identity = self.gate.known_without_state(presented)
        if identity is None:
            try:
                identity_or_refusal = await anyio.to_thread.run_sync(
                    self.gate.credentials.identify, presented
                )
            except DapiConfigError as exc:
                # The state cannot say which tokens exist (unavailable): no guess either way.
                await product_error_response(exc)(scope, receive, send)
                return
            client = client_host(scope)
            if isinstance(identity_or_refusal, str):
                refusal = await self.gate.refusal(
                    identity_or_refusal, client, presented is not None
                )
                await refusal(scope, receive, send)
                return
            identity = identity_or_refusal
        self.gate.passed(client_host(scope))
        scope.setdefault("state", {})["identity"] = identity
        with self.gate.acting_as(identity.actor):
            await self.app(scope, receive, send)

    def _guarded(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Identity:
    """The caller, as :class:`AdminAccess` identified it, if its role may call the route
    (:data:`.roles.ROUTE_ROLES`): 403 otherwise, before the route's parameters and body are
    looked at; 401 for a request the middleware did not pass (left out), so no admin route is
    ever open by mistake. The one place roles are checked."""
    identity = getattr(request.state, "identity", None)
    if not isinstance(identity, Identity):
        raise HTTPException(401, _MISSING, headers=_CHALLENGE)
    refused = role_refusal(identity, getattr(request.scope.get("route"), "name", ""))
    if refused is not None:
        raise refused
    return identity


def role_refusal(identity: Identity, route_name: str) -> ApiError | None:
    """The 403 for ``identity`` calling ``route_name`` (:data:`.roles.ROUTE_ROLES`), or None
    when its role may."""
    needed = role_for(route_name)
    if identity.role >= needed:
        return None
    who = "this API" if identity.name is None else f"the token {identity.name!r}"
    return ApiError(
        403,
        f"{who} has the role {identity.role.label}; this route needs {needed.label}",
        "forbidden",
    )


def without_security(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI ``document`` of a service that needs no token: no operation requires the
    bearer scheme (a client, or a fuzzer, reading the document must not expect a 401)."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
    document.get("components", {}).pop("securitySchemes", None)
    return document
