"""The app factory: the error table, the admin dependency hook, metrics per app."""

from __future__ import annotations

from fastapi import Depends, Request

from dapi_config import (
    ConfigError,
    DapiConfigError,
    DuplicateNodeError,
    NodeNotFoundError,
    PreconditionFailedError,
    SchemaTooNewError,
    StateCorruptError,
    StateUnavailableError,
    ValidationError,
)
from dapi_config.api.errors import ApiError, product_error_response, status_for
from dapi_config.manager import ConfigManager
from tests.api.conftest import StartServer


def test_error_table() -> None:
    assert status_for(ValidationError("x")) == 422
    assert status_for(ConfigError("x")) == 400
    assert status_for(NodeNotFoundError("n")) == 404
    assert status_for(DuplicateNodeError("n")) == 409
    assert status_for(PreconditionFailedError("x")) == 412
    assert status_for(StateUnavailableError("x")) == 503
    assert status_for(SchemaTooNewError("p", 9, 1)) == 503
    assert status_for(StateCorruptError("x")) == 503
    assert status_for(DapiConfigError("x")) == 500


def test_error_body_shape() -> None:
    response = product_error_response(
        ValidationError("bad", [{"field": "a.b", "message": "m", "input": float("nan")}])
    )
    assert response.status_code == 422
    assert response.body == (
        b'{"error":"bad","code":"validation_error",'
        b'"errors":[{"field":"a.b","message":"m","input":"nan"}]}'
    )
    unavailable = product_error_response(StateUnavailableError("disk full"))
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "5"


def test_admin_dependencies_guard_admin_routes_only(
    manager: ConfigManager, start_server: StartServer
) -> None:
    def require_token(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer s3cret":
            raise ApiError(401, "missing or wrong admin token")

    server = start_server(manager, admin_dependencies=[Depends(require_token)])
    c = server.client
    r = c.get("/admin/v1/nodes")
    assert r.status_code == 401
    assert r.json() == {"error": "missing or wrong admin token", "code": "unauthorized"}
    assert c.post("/admin/v1/nodes/batch", json=[]).status_code == 401
    assert c.get("/admin/v1/nodes", headers={"Authorization": "Bearer s3cret"}).json() == []
    for probe in ("/livez", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert c.get(probe).status_code == 200, probe


def test_two_apps_have_separate_metrics(manager: ConfigManager, start_server: StartServer) -> None:
    first = start_server(manager)
    second = start_server(manager)
    first.client.get("/admin/v1/nodes")
    assert 'route="/admin/v1/nodes"' in first.client.get("/metrics").text
    assert 'route="/admin/v1/nodes"' not in second.client.get("/metrics").text
