"""The outermost ASGI middleware: the body-size limit, per-request metrics and the access log.

The body is read up front (bounded in size and time) and replayed to the app, so an oversized
body gets a clean 413 and a trickled one a 408 before any parsing, and a client that goes away
while sending its body is logged once as such (499, nginx's "client closed request"), never as
a server error; each request is counted under its route template (never the raw path, so a
scanner cannot explode the metrics) and logged on one escaped line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from dapi_config.api.errors import error_response, route_pattern
from dapi_config.api.metrics import ServiceMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("dapi_config.access")

#: The status logged and counted for a request whose client left before its body was in
#: (nothing is sent: there is nobody to send it to).
CLIENT_CLOSED = 499

#: The HTTP methods metrics are labelled with; any other is counted as ``other``.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMiddleware:
    """Outermost ASGI middleware: body limits, per-request metrics and one log line.

    The body is read up front (bounded by ``max_body`` bytes and ``body_timeout`` seconds)
    and replayed to the app, so an oversized body gets a clean 413 before any parsing, whether
    or not the client sent ``Content-Length``, and a trickled one a 408.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        max_body: int,
        route_templates: Callable[[], Iterable[str]],
        body_timeout: float,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.body_timeout = body_timeout
        self._route_templates = route_templates
        self._routes: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        method = str(scope.get("method", ""))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            body = await self._bounded_body(scope, receive)
            if body == CLIENT_CLOSED:
                status = CLIENT_CLOSED
            elif isinstance(body, int):
                await self._refusal(body)(scope, receive, send_wrapper)
            else:
                await self.app(scope, body, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = self._route_label(str(scope.get("path", "")))
            # Made-up methods (``curl -X M1234``) share one label: each would add series
            # that are never freed.
            label = method if method in _METHODS else "other"
            self.metrics.requests.labels(label, route, str(status)).inc()
            self.metrics.request_seconds.labels(label, route).observe(elapsed)
            if status >= 400:
                self.metrics.errors.labels(str(status)).inc()
            access_log.info(
                '%s "%s %s" %d %.1fms',
                _client(scope),
                _printable(method),
                # The path is percent-decoded: escape it so "%0A" cannot forge a log line.
                _printable(str(scope.get("path", ""))),
                status,
                elapsed * 1000,
            )

    def _route_label(self, path: str) -> str:
        """The route template (``/admin/v1/nodes/{node_id}``) a path matches, or "unmatched".

        Matched against the app's own path templates (compiled on first use, so routers added
        after construction count): a scanner must not explode the metric's cardinality.
        """
        if self._routes is None:
            templates = sorted(set(self._route_templates()), key=lambda t: (t.count("{"), t))
            self._routes = [(route_pattern(t), t) for t in templates]
        for pattern, template in self._routes:
            if pattern.match(path):
                return template
        return "unmatched"

    def _refusal(self, status: int) -> ASGIApp:
        if status == 413:
            return error_response(
                413, f"request body larger than {self.max_body} bytes", "payload_too_large"
            )
        # The rest of a late body may still arrive: the connection cannot be reused.
        return error_response(
            408,
            f"request body not received within {self.body_timeout:.0f} s",
            "body_timeout",
            headers={"Connection": "close"},
        )

    async def _bounded_body(self, scope: Scope, receive: Receive) -> Receive | int:
        """A ``receive`` that replays the whole body; or 413 (too large), 408 (not in within
        the body timeout) or :data:`CLIENT_CLOSED` (the client left while sending it)."""
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE") and length is None:
            return receive
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            async with asyncio.timeout(self.body_timeout):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return CLIENT_CLOSED
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return 413
                    chunks.append(chunk)
                    more = bool(message.get("more_body", False))
        except TimeoutError:
            return 408
        return _replay(b"".join(chunks), receive)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the buffered body over once; after that, the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _printable(text: str) -> str:
    """``text`` with control and non-ASCII characters escaped (one log line, plain ASCII)."""
    if text.isascii() and text.isprintable():
        return text
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


#: Methods that change state: the ones a cross-site page must not be able to send.
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CrossOriginGuard:
    """403 for a state-changing request under ``prefix`` that a browser sent from another
    origin (CSRF: a page elsewhere posting to this port, which matters most when the admin API
    has no token and the browser can reach it).

    Browsers say where a request comes from and pages cannot forge it: ``Sec-Fetch-Site``
    (anything but ``same-origin`` or ``none`` is refused) or, from browsers too old to send it,
    ``Origin`` (refused unless its host is the one the request was sent to). Clients that are
    not browsers (curl, the predecessor's tools, scripts) send neither header and pass
    unchanged; the console sends its requests from this origin. Safe methods (GET, HEAD,
    OPTIONS) are never refused: they change nothing.
    """

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _UNSAFE and self._guarded(scope):
            problem = cross_origin_problem(scope)
            if problem is not None:
                response = error_response(403, problem, "cross_origin")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _guarded(self, scope: Scope) -> bool:
        path: str = scope["path"]
        return path == self.prefix or path.startswith(self.prefix + "/")


def cross_origin_problem(scope: Scope) -> str | None:
    """Why a request a browser sent from another origin is refused (None: it is not)."""
    headers = {k.lower(): v for k, v in scope.get("headers") or []}
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
    if site:
        # The browser's own verdict, which pages cannot set: it is right behind a TLS proxy too.
        if site in ("same-origin", "none"):
            return None
        return f"cross-origin request refused (Sec-Fetch-Site: {_printable(site)[:40]})"
    origin = headers.get(b"origin")
    if origin is None:
        return None
    # Older browsers send only Origin: compare its host[:port] with the Host this request was
    # sent to (not the scheme, which a TLS-terminating proxy changes).
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    sent = origin.decode("latin-1").strip().lower()
    if sent.partition("://")[2] != host or not host:
        return f"cross-origin request refused (Origin: {_printable(sent)[:80]})"
    return None
