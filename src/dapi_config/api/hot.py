"""The hot write routes, served without the framework's per-request work.

The writes clients send most (a node: ``POST /admin/v1/nodes``, ``PUT /admin/v1/nodes/{id}``,
``POST /admin/v1/nodes/batch``; a value of the state: ``PUT /admin/v1/state/...``, the height
every block) are answered here, in front of the token middleware and FastAPI:
the same checks in the same order (cross-origin guard, token, role from :mod:`.roles`), the
same parsing and write (:mod:`.nodes`, :mod:`.kinds`), the same error mapping
(:mod:`.errors`), but as **one** staged job of the writer thread (:mod:`.write_queue`: the
caller identified and the body parsed before the transaction, the write in it, shared with
the concurrent writes, the reply built after the commit), without FastAPI's
routing, dependency solving and request objects, which cost more CPU than the write itself.
The routes stay declared in FastAPI: the OpenAPI document describes them (a test compares the
two), and anything this module does not take as it is (a path id the pattern refuses) goes to
FastAPI, which answers it as before.

It sits inside :class:`.middleware.RequestMiddleware`: bodies are bounded, requests counted
and logged as every other.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dapi_config.api.auth import Gate, bearer_credentials, client_host, role_refusal
from dapi_config.api.errors import (
    ApiError,
    api_error_response,
    error_response,
    product_error_response,
    unexpected_error_response,
)
from dapi_config.api.kinds import state_writes
from dapi_config.api.middleware import cross_origin_problem
from dapi_config.api.nodes import stage_add_nodes, stage_put_node
from dapi_config.api.write_queue import Staged, WriteQueue
from dapi_config.errors import DapiConfigError
from dapi_config.manager import ConfigManager
from dapi_config.models import NODE_ID_PATTERN

_NODE_ID = re.compile(NODE_ID_PATTERN)
_MAX_NODE_ID = 128

#: ``stage(body, content_type, path_id, if_match)`` -> the write parsed and checked, on the
#: writer thread before the transaction.
Stage = Callable[[bytes, str | None, str | None, str], Staged]


@dataclass(frozen=True)
class HotRoute:
    """One request this module answers: the route's name (its role, its operationId), its
    stage, and the node id of the path, if any."""

    name: str
    stage: Stage
    node_id: str | None = None


def _batch(body: bytes, ctype: str | None, _: str | None, __: str) -> Staged:
    return stage_add_nodes(body, ctype)


def _state(stage: Callable[..., Staged]) -> Stage:
    def run(body: bytes, ctype: str | None, _: str | None, if_match: str) -> Staged:
        return stage(body, ctype, if_match)

    return run


class HotTable:
    """Which requests are hot, under the admin ``prefix``: node writes (one, a batch) and
    each writable kind of state of the catalogue (``PUT /state/...``; the height comes every
    block). ``PUT /nodes`` (the whole registry, after a backup) and the rest stay FastAPI's."""

    def __init__(self, prefix: str) -> None:
        #: (method, path template under the prefix) -> the route: what the OpenAPI document
        #: must describe (a test holds it to it).
        self.templates: dict[tuple[str, str], HotRoute] = {
            ("POST", "/nodes"): HotRoute("create_node", stage_put_node),
            ("POST", "/nodes/batch"): HotRoute("create_nodes", _batch),
            ("PUT", "/nodes/{node_id}"): HotRoute("replace_node", stage_put_node),
            **{
                ("PUT", f"/state{path}"): HotRoute(name, _state(stage))
                for path, (name, stage) in state_writes().items()
            },
        }
        self.fixed = {
            (method, prefix + template): route
            for (method, template), route in self.templates.items()
            if "{" not in template
        }
        self.nodes = f"{prefix}/nodes"

    def route(self, method: str, path: str) -> HotRoute | None:
        """The hot route of ``method path``, or None (FastAPI's)."""
        found = self.fixed.get((method, path))
        if found is not None or method != "PUT" or not path.startswith(self.nodes + "/"):
            return found
        node_id = path[len(self.nodes) + 1 :]
        if len(node_id) <= _MAX_NODE_ID and _NODE_ID.fullmatch(node_id):
            return HotRoute("replace_node", stage_put_node, node_id)
        return None


class HotWrites:
    """ASGI: answers the requests of ``table``; passes every other request on."""

    def __init__(self, app: ASGIApp, *, table: HotTable, manager: ConfigManager, gate: Gate):
        self.app = app
        self.table = table
        self.manager = manager
        self.gate = gate
        self.writes = WriteQueue(manager)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http":
            route = self.table.route(scope["method"], scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        response = await self._answer(route, scope, receive)
        await response(scope, receive, send)

    async def _answer(self, route: HotRoute, scope: Scope, receive: Receive) -> Response:
        problem = cross_origin_problem(scope)
        if problem is not None:
            return error_response(403, problem, "cross_origin")
        headers = dict(scope["headers"])
        presented = bearer_credentials(headers.get(b"authorization"))
        body = await _body(receive)
        content_type = headers.get(b"content-type")
        if_match = headers.get(b"if-match", b"")
        job = functools.partial(
            self._stage,
            route,
            presented,
            body,
            None if content_type is None else content_type.decode("latin-1"),
            if_match.decode("latin-1"),
        )
        try:
            outcome = await self.writes.run(job)
        except DapiConfigError as exc:  # the shared commit failed: nothing was written
            return product_error_response(exc)
        client = client_host(scope)
        if isinstance(outcome, str):
            return await self.gate.refusal(outcome, client, presented is not None)
        self.gate.passed(client)
        assert isinstance(outcome, Response)  # _stage's and Staged's replies
        return outcome

    def _stage(
        self,
        route: HotRoute,
        presented: bytes | None,
        body: bytes,
        content_type: str | None,
        if_match: str,
    ) -> Staged | Response | str:
        """Identify the caller, check its role and parse (before the transaction): the 401
        message, an error reply, or the write to run."""
        try:
            identity = self.gate.identify(presented)
            if isinstance(identity, str):
                return identity
            refused = role_refusal(identity, route.name)
            if refused is not None:
                raise refused
            staged = route.stage(body, content_type, route.node_id, if_match)
        except Exception as exc:
            return _error_reply(route, exc)

        def write(cm: ConfigManager) -> object:
            with self.gate.acting_as(identity.actor):
                return staged.write(cm)

        return Staged(write, staged.answer, functools.partial(_error_reply, route))


def _error_reply(route: HotRoute, exc: Exception) -> Response:
    """The reply to ``exc`` of a hot route, as the framework's handlers map it."""
    if isinstance(exc, ApiError):
        return api_error_response(exc)
    if isinstance(exc, DapiConfigError):
        return product_error_response(exc)
    return unexpected_error_response("hot route", route.name, exc)


async def _body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)
