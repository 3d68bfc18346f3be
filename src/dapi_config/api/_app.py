"""``create_app(manager)``: the admin HTTP API (§9) around one :class:`ConfigManager`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from dapi_config import __version__
from dapi_config.api import (
    audit,
    backups,
    console,
    health,
    keys,
    kinds,
    metrics,
    nodes,
    state,
    tokens,
)
from dapi_config.api.auth import (
    AdminAccess,
    Credentials,
    FailureThrottle,
    Gate,
    authorize,
    without_security,
)
from dapi_config.api.bodies import add_body_schemas
from dapi_config.api.docs import DOC_PATHS, add_offline_docs
from dapi_config.api.errors import error_responses, install_error_handlers
from dapi_config.api.hot import HotTable, HotWrites
from dapi_config.api.limits import BODY_TIMEOUT_S, MAX_BODY_BYTES, describe_limits
from dapi_config.api.metrics import ServiceMetrics
from dapi_config.api.middleware import CrossOriginGuard, RequestMiddleware
from dapi_config.health import Readiness
from dapi_config.manager import ConfigManager

ADMIN_PREFIX = "/admin/v1"

#: Routers mounted under ``/admin/v1``, each one area. Add a router here to add an area.
#: All of them are behind the tokens (:mod:`.auth`) once one exists, each route needing the role
#: :mod:`.roles` gives it.
ADMIN_ROUTERS: tuple[APIRouter, ...] = (
    nodes.router,
    keys.router,
    state.router,
    kinds.router,
    backups.router,
    audit.router,
    tokens.router,
)
#: Routers at the root (probes, metrics, the console's page): never behind the admin token.
ROOT_ROUTERS: tuple[APIRouter, ...] = (health.router, metrics.router, console.router)


def create_app(
    manager: ConfigManager,
    *,
    service_metrics: ServiceMetrics | None = None,
    readiness: Readiness | None = None,
    admin_dependencies: Sequence[Any] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout: float = BODY_TIMEOUT_S,
    require_token: bool = False,
    failure_throttle: FailureThrottle | None = None,
) -> FastAPI:
    """The FastAPI app serving ``manager``.

    Every ``/admin/v1`` route requires a token once one exists (``api.admin_token``, or a
    scoped token of :meth:`ConfigManager.create_token`), of the role :mod:`.roles` gives the
    route (:mod:`.auth`); ``require_token``: refuse them all while none exists (the service
    reachable from the network). ``admin_dependencies`` (``fastapi.Depends(...)`` items) run
    after that check before every ``/admin/v1`` route. The caller keeps ownership of ``manager``
    (the app never closes it). Endpoints are plain ``def``: SQLite work runs in the threadpool,
    never on the event loop.
    """
    service_metrics = service_metrics or ServiceMetrics()
    readiness = readiness or Readiness(manager)
    app = FastAPI(
        title="dapi-config admin API",
        version=__version__,
        description=(
            "Manage the inference-node registry and inspect the dynamic state of a dapi node. "
            'Errors: `{"error": message, "code": machine_code}` (+ `errors` for bad input).\n\n'
            + describe_limits()
        ),
        docs_url=None,  # served by add_offline_docs: no CDN, no web fonts
        redoc_url=None,
        # Each route's own name (``list_nodes``, ``set_height``): generated clients in other
        # languages get methods named as here, not ``list_nodes_admin_v1_nodes_get``.
        generate_unique_id_function=lambda route: route.name,
    )
    add_offline_docs(app)
    app.state.manager = manager
    app.state.metrics = service_metrics
    app.state.readiness = readiness
    credentials = Credentials(manager, admin_token=manager.admin_token(), required=require_token)
    app.state.credentials = credentials
    manager.observe_writes(service_metrics.observe_write)
    service_metrics.watch_state(manager, readiness)
    install_error_handlers(app)

    admin = APIRouter(
        prefix=ADMIN_PREFIX,
        dependencies=[Depends(authorize), *admin_dependencies],
        responses=error_responses(401, 403),
    )
    for router in ADMIN_ROUTERS:
        admin.include_router(router)
    app.include_router(admin)
    for router in ROOT_ROUTERS:
        app.include_router(router)

    generate_openapi = app.openapi
    documents: dict[bool, dict[str, Any]] = {}

    def openapi_with_bodies() -> dict[str, Any]:
        # Whether the routes need a token can change while the service runs (the first token
        # created): each answer is built once and served as things are now.
        secured = credentials.needs_token()
        if secured not in documents:
            document = add_body_schemas(generate_openapi())
            app.openapi_schema = None  # FastAPI caches its own build; each variant is ours
            documents[secured] = document if secured else without_security(document)
        return documents[secured]

    app.openapi = openapi_with_bodies  # type: ignore[method-assign]

    def route_templates() -> list[str]:
        # Read from the routers, not from app.openapi(): a service nobody asks for its OpenAPI
        # document never builds it (~2.7 MiB resident).
        documented = [
            prefix + route.path
            for prefix, routers in (("", ROOT_ROUTERS), (ADMIN_PREFIX, ADMIN_ROUTERS))
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and route.include_in_schema
        ]
        return [*documented, *DOC_PATHS, *console.CONSOLE_PATHS, "/openapi.json"]

    gate = Gate(
        credentials=credentials,
        acting_as=manager.acting_as,
        metrics=service_metrics,
        throttle=FailureThrottle() if failure_throttle is None else failure_throttle,
    )
    app.add_middleware(CrossOriginGuard, prefix=ADMIN_PREFIX)
    # Inside RequestMiddleware (added last = outermost), so 401s are counted and logged too.
    app.add_middleware(AdminAccess, prefix=ADMIN_PREFIX, gate=gate)
    # The frequent writes, before the token middleware and FastAPI: the same checks, one trip to
    # the thread pool (.hot). Extra admin dependencies are FastAPI's: then FastAPI serves all.
    if not admin_dependencies:
        app.add_middleware(HotWrites, table=HotTable(ADMIN_PREFIX), manager=manager, gate=gate)
    app.add_middleware(
        RequestMiddleware,
        metrics=service_metrics,
        max_body=max_body_bytes,
        route_templates=route_templates,
        body_timeout=body_timeout,
    )
    return app
