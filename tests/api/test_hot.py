"""The hot write routes (:mod:`dapi_config.api.hot`) answer exactly as FastAPI's routes would:
the same request, sent to a server with the hot path and to one without it (FastAPI serves
everything when extra admin dependencies are given), gets the same status, body and ETag; the
routes it takes are the ones the OpenAPI document describes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends

from dapi_config import ConfigManager
from dapi_config.access import Role
from dapi_config.api.hot import HotRoute, HotTable, HotWrites
from tests.api.conftest import RunningServer, StartServer

ADMIN = "/admin/v1"
NODES = f"{ADMIN}/nodes"
HEIGHT = f"{ADMIN}/state/height"


async def _nothing() -> None:
    """An extra admin dependency that does nothing: it makes FastAPI serve every route."""


def _node(node_id: str, **changes: Any) -> dict[str, Any]:
    node = {
        "id": node_id,
        "host": "10.0.0.5",
        "inference_port": 5000,
        "poc_port": 8080,
        "max_concurrent": 500,
        "models": {"Qwen/Qwen2.5-7B-Instruct": {"args": ["--tp", "2"]}},
        "hardware": [{"type": "H100", "count": 8}],
    }
    node.update(changes)
    return node


def _pair(
    config_file: Path, tmp_path: Path, start_server: StartServer
) -> list[tuple[RunningServer, str]]:
    """The server with the hot path and the one without, each with a writer's token set on
    its client, and each with the token of a reader."""
    servers = []
    for name, extra in (("hot", ()), ("framework", (Depends(_nothing),))):
        cm = ConfigManager.open(config_file, tmp_path / f"{name}.db", env={})
        reader = cm.create_token("reader", Role.READ).token
        writer = cm.create_token("writer", Role.WRITE).token
        server = start_server(cm, admin_dependencies=extra)
        server.client.headers["Authorization"] = f"Bearer {writer}"
        servers.append((server, reader))
    return servers


def _request(
    server: RunningServer, reader: str, request: dict[str, Any]
) -> tuple[int, Any, str | None]:
    headers = dict(request.get("headers", {}))
    if "token" in request:
        token = reader if request["token"] == "reader" else request["token"]
        headers["Authorization"] = f"Bearer {token}" if token else ""
    content = request["body"]
    if not isinstance(content, bytes):
        content = json.dumps(content).encode()
    response = server.client.request(
        request["method"], request["path"], content=content, headers=headers
    )
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body, response.headers.get("etag")


def test_the_hot_path_answers_as_the_framework_does(
    config_file: Path, tmp_path: Path, start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []
    stage = HotWrites._stage

    def counted(self: HotWrites, route: HotRoute, *args: Any) -> Any:
        taken.append(route.name)
        return stage(self, route, *args)

    monkeypatch.setattr(HotWrites, "_stage", counted)
    (hot, hot_reader), (framework, framework_reader) = _pair(config_file, tmp_path, start_server)
    requests: list[dict[str, Any]] = [
        {"method": "POST", "path": NODES, "body": _node("a")},
        {"method": "POST", "path": NODES, "body": _node("a", host="10.0.0.6")},  # replaced
        {"method": "PUT", "path": f"{NODES}/b", "body": _node("b")},  # created: 201
        {
            "method": "PUT",
            "path": f"{NODES}/b",
            "body": {k: v for k, v in _node("b").items() if k != "id"},
        },
        {"method": "PUT", "path": f"{NODES}/b", "body": _node("c")},  # id differs: 422
        {
            "method": "PUT",
            "path": f"{NODES}/b",
            "body": _node("b"),
            "headers": {"If-Match": '"stale"'},
        },
        {
            "method": "PUT",
            "path": f"{NODES}/new",
            "body": _node("new"),
            "headers": {"If-Match": "*"},
        },
        {"method": "POST", "path": NODES, "body": b"{not json"},
        {"method": "POST", "path": NODES, "body": b""},
        {"method": "POST", "path": NODES, "body": [1, 2]},
        {"method": "POST", "path": NODES, "body": _node("d", inference_port="5000")},
        {
            "method": "POST",
            "path": NODES,
            "body": _node("e"),
            "headers": {"Content-Type": "text/plain"},
        },
        {"method": "POST", "path": NODES, "body": _node("f"), "token": "wrong"},
        {"method": "POST", "path": NODES, "body": _node("f"), "token": ""},
        {"method": "POST", "path": NODES, "body": _node("f"), "token": "reader"},
        {
            "method": "POST",
            "path": NODES,
            "body": _node("f"),
            "headers": {"Sec-Fetch-Site": "cross-site"},
        },
        {
            "method": "POST",
            "path": NODES,
            "body": _node("g"),
            "headers": {"Origin": "http://evil.example"},
        },
        {"method": "PUT", "path": f"{NODES}/-bad", "body": _node("-bad")},  # FastAPI's 422 in both
        {"method": "POST", "path": f"{NODES}/batch", "body": [_node("h"), _node("i")]},
        {"method": "POST", "path": f"{NODES}/batch", "body": [_node("j"), _node("h")]},  # 409
        {"method": "POST", "path": f"{NODES}/batch", "body": [_node(f"k{i}") for i in range(1001)]},
        {"method": "POST", "path": f"{NODES}/batch", "body": {"not": "a list"}},
        {"method": "PUT", "path": HEIGHT, "body": {"height": 120}},
        {"method": "PUT", "path": HEIGHT, "body": {"height": "121"}},
        {"method": "PUT", "path": HEIGHT, "body": {"height": 122, "extra": 1}},
        {"method": "PUT", "path": HEIGHT, "body": {"height": 123}, "headers": {"If-Match": '"x"'}},
        {"method": "PUT", "path": HEIGHT, "body": {"height": 124}, "token": "reader"},
        {
            "method": "PUT",
            "path": f"{ADMIN}/state/upgrade-plan",
            "body": {"name": "v2", "height": 500},
        },
    ]
    for request in requests:
        answers = [
            _request(hot, hot_reader, request),
            _request(framework, framework_reader, request),
        ]
        (status_hot, body_hot, etag_hot), (status_fw, body_fw, etag_fw) = answers
        assert (status_hot, body_hot, etag_hot) == (status_fw, body_fw, etag_fw), (request, answers)
    # Every request but the refused ones (cross-origin, a path id FastAPI refuses) and only
    # those to the hot server took the hot path.
    assert len(taken) == len(requests) - 3
    assert {"create_node", "replace_node", "create_nodes", "set_height"} <= set(taken)
    assert hot.manager.get_height() == framework.manager.get_height() == 120
    assert hot.manager.get_nodes() == framework.manager.get_nodes()
    # The audit names the same actors in the same order.
    assert [(e.actor, e.action, e.target) for e in hot.manager.get_audit()] == [
        (e.actor, e.action, e.target) for e in framework.manager.get_audit()
    ]


def test_the_hot_routes_are_the_documented_ones(
    manager: ConfigManager, start_server: StartServer
) -> None:
    document = start_server(manager).client.get("/openapi.json").json()
    table = HotTable(ADMIN)
    assert ("PUT", "/state/height") in table.templates  # the catalogue's kinds are in it
    for (method, template), route in table.templates.items():
        operation = document["paths"][ADMIN + template][method.lower()]
        assert operation["operationId"] == route.name, (method, template)
    create = table.route("POST", NODES)
    assert create is not None and create.name == "create_node"
    replace = table.route("PUT", f"{NODES}/n-1")
    assert replace is not None and (replace.name, replace.node_id) == ("replace_node", "n-1")
    for method, path in [
        ("GET", NODES),
        ("PUT", NODES),
        ("PUT", f"{NODES}/-bad"),
        ("PUT", f"{NODES}/" + "a" * 129),
        ("PUT", f"{NODES}/a/enable"),
        ("POST", f"{NODES}/a/enable"),
        ("DELETE", f"{NODES}/a"),
        ("GET", f"{ADMIN}/state/height"),
        ("DELETE", f"{ADMIN}/state/upgrade-plan"),
        ("POST", f"{ADMIN}/state/node-versions"),
    ]:
        assert table.route(method, path) is None, (method, path)
