"""The node routes over a real server: predecessor statuses and bodies, ETags, every error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dapi_config import InferenceNodeConfig
from tests.api.conftest import RunningServer

pytestmark = pytest.mark.both_backends

NODES = "/admin/v1/nodes"


def node(node_id: str = "n1", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": node_id,
        "host": "10.0.0.1",
        "inference_port": 5000,
        "poc_port": 8080,
        "models": {"Qwen/Qwen2.5-7B-Instruct": {"args": ["--tp", "2"]}},
        "max_concurrent": 500,
        "hardware": [{"type": "H100", "count": 8}],
    }
    data.update(overrides)
    return data


def stored(data: dict[str, Any]) -> dict[str, Any]:
    """What the service returns for ``data`` (defaults filled in)."""
    return InferenceNodeConfig.model_validate(data).model_dump(mode="json")


def test_add_list_get_delete_roundtrip(running_server: RunningServer) -> None:
    c = running_server.client
    assert c.get(NODES).json() == []

    r = c.post(NODES, json=node("n1"))
    assert r.status_code == 200  # the predecessor answered 200, not 201
    assert r.json() == stored(node("n1"))
    etag = r.headers["etag"]

    listed = c.get(NODES)
    assert listed.status_code == 200
    # The predecessor's NodeResponse shape: {"node": ..., "state": {"admin_state": ...}}.
    assert listed.json() == [
        {"node": stored(node("n1")), "state": {"admin_state": {"enabled": True, "epoch": 0}}}
    ]

    one = c.get(f"{NODES}/n1")
    assert one.status_code == 200
    assert one.json() == stored(node("n1"))
    assert one.headers["etag"] == etag

    removed = c.delete(f"{NODES}/n1")
    assert removed.status_code == 200
    assert removed.json() == stored(node("n1"))
    assert c.get(NODES).json() == []
    assert running_server.manager.get_nodes() == []


def test_writes_are_audited_as_api(running_server: RunningServer) -> None:
    running_server.client.post(NODES, json=node("n1")).raise_for_status()
    entries = running_server.manager.backend.audit_entries()
    assert [(e.actor, e.action, e.target) for e in entries] == [("api", "add_node", "n1")]


def test_enable_disable(running_server: RunningServer) -> None:
    c = running_server.client
    c.post(NODES, json=node("n1")).raise_for_status()
    r = c.post(f"{NODES}/n1/disable")
    assert r.status_code == 200
    assert r.json() == {"message": "node disabled successfully", "node_id": "n1"}
    assert c.get(f"{NODES}/n1").json()["is_enabled"] is False
    r = c.post(f"{NODES}/n1/enable")
    assert r.status_code == 200
    assert r.json() == {"message": "node enabled successfully", "node_id": "n1"}
    assert running_server.manager.get_node("n1").is_enabled is True


def test_unknown_node_is_404_everywhere(running_server: RunningServer) -> None:
    c = running_server.client
    expected = {"error": "node 'ghost' not found", "code": "node_not_found", "node_id": "ghost"}
    for response in (
        c.get(f"{NODES}/ghost"),
        c.delete(f"{NODES}/ghost"),
        c.post(f"{NODES}/ghost/enable"),
        c.post(f"{NODES}/ghost/disable"),
    ):
        assert response.status_code == 404, response.text
        assert response.json() == expected
    assert running_server.manager.backend.latest_revision() == 0


def test_put_creates_a_missing_node_unless_if_match_is_given(
    running_server: RunningServer,
) -> None:
    """As the later predecessor: PUT on a new id creates the node (201); with If-Match
    nothing can match a missing node (412, nothing written)."""
    c = running_server.client
    stale = c.put(f"{NODES}/ghost", json=node("ghost"), headers={"If-Match": "*"})
    assert stale.status_code == 412 and running_server.manager.get_nodes() == []
    created = c.put(f"{NODES}/ghost", json=node("ghost"))
    assert created.status_code == 201 and created.json() == stored(node("ghost"))
    assert created.headers["etag"]
    again = c.put(f"{NODES}/ghost", json=node("ghost", host="10.2.2.2"))
    assert again.status_code == 200 and again.json()["host"] == "10.2.2.2"


def test_reposting_an_id_replaces_the_node(running_server: RunningServer) -> None:
    """As the predecessor's add handler: POSTing an existing id replaces that node (200), one
    audit row as an update; the batch keeps "add" semantics (409, nothing stored)."""
    c = running_server.client
    c.post(NODES, json=node("n1")).raise_for_status()
    r = c.post(NODES, json=node("n1", host="10.9.9.9"))
    assert r.status_code == 200 and r.json() == stored(node("n1", host="10.9.9.9"))
    assert running_server.manager.get_node("n1").host == "10.9.9.9"
    assert [n.id for n in running_server.manager.get_nodes()] == ["n1"]
    actions = [e.action for e in running_server.manager.backend.audit_entries()]
    assert actions == ["add_node", "update_node"]
    r = c.post(f"{NODES}/batch", json=[node("n1", host="10.7.7.7")])
    assert r.status_code == 409
    assert r.json() == {
        "error": "node 'n1' already exists",
        "code": "duplicate_node",
        "node_id": "n1",
    }
    assert running_server.manager.get_node("n1").host == "10.9.9.9"


def test_list_pages_with_limit_and_after(running_server: RunningServer) -> None:
    c = running_server.client
    c.post(f"{NODES}/batch", json=[node(f"p{i}") for i in range(5)]).raise_for_status()
    first = c.get(NODES, params={"limit": 2})
    assert [item["node"]["id"] for item in first.json()] == ["p0", "p1"]
    # The next page is named in the Link header (RFC 8288) while more nodes follow.
    assert first.links["next"]["url"] == f"{NODES}?limit=2&after=p1"
    second = c.get(first.links["next"]["url"])
    assert [item["node"]["id"] for item in second.json()] == ["p2", "p3"]
    last = c.get(second.links["next"]["url"])
    assert [item["node"]["id"] for item in last.json()] == ["p4"]
    assert "Link" not in last.headers
    assert "Link" not in c.get(NODES, params={"limit": 3, "after": "p1"}).headers  # exactly full
    assert "Link" not in c.get(NODES).headers
    rest = c.get(NODES, params={"limit": 10, "after": "p1"}).json()
    assert [item["node"]["id"] for item in rest] == ["p2", "p3", "p4"]
    assert c.get(NODES, params={"after": "p4"}).json() == []
    assert c.get(NODES, params={"after": "gone"}).status_code == 404
    assert c.get(NODES, params={"limit": 0}).status_code == 422


def test_invalid_node_is_422_naming_the_field(running_server: RunningServer) -> None:
    c = running_server.client
    r = c.post(NODES, json=node("n1", inference_port=70000))
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    assert [e["field"] for e in body["errors"]] == ["inference_port"]
    assert body["errors"][0]["input"] == 70000
    assert "inference_port" in body["error"]

    r = c.post(NODES, json={"id": "n1"})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"host", "inference_port", "poc_port"}

    r = c.post(NODES, json=node("n1", surprise=1))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "surprise"

    r = c.post(NODES, json=node("bad id!"))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "id"
    assert running_server.manager.get_nodes() == []


def test_malformed_bodies_are_4xx_never_500(running_server: RunningServer) -> None:
    c = running_server.client
    headers = {"Content-Type": "application/json"}
    cases: list[tuple[bytes, int, str]] = [
        (b"{bad", 400, "invalid_json"),
        (b"", 422, "validation_error"),
        (b"null", 422, "validation_error"),
        (b"[]", 422, "validation_error"),
        (b'"text"', 422, "validation_error"),
        (b"\xff\xfe\x00", 400, "invalid_json"),
        (b'{"id": "n1", "host": "h", "inference_port": 1e999, "poc_port": 1}', 422, ""),
        # A lone surrogate is echoed back in the error: the error body must still encode.
        (b'{"id": "n1", "host": "\\ud800", "inference_port": 1, "poc_port": 1}', 422, ""),
        (
            b'{"id": "n1", "host": "h", "inference_port": 1, "poc_port": 1, "models": '
            b'{"\\udfff": {}}}',
            422,
            "",
        ),
        (b"[" * 50_000 + b"]" * 50_000, 400, "invalid_json"),  # nesting beyond the parser
        (
            b'{"id": "n1", "host": "h", "inference_port": ' + b"9" * 5000 + b', "poc_port": 1}',
            400,
            "invalid_json",
        ),  # an integer too long to parse
    ]
    for body, status, code in cases:
        r = c.post(NODES, content=body, headers=headers)
        assert r.status_code == status, (body, r.text)
        assert r.json()["code"] == (code or r.json()["code"])
        assert r.json()["error"]
    # A form body (curl -d without a JSON content type) is a clear 415.
    r = c.post(
        NODES, content=b"id=n1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415
    assert r.json()["code"] == "unsupported_media_type"
    assert running_server.manager.get_nodes() == []


def test_bad_path_ids_are_422(running_server: RunningServer) -> None:
    c = running_server.client
    for bad in ("bad%20id", "-lead", "a" * 129, "%00", "x%2Fy"):
        r = c.get(f"{NODES}/{bad}")
        assert r.status_code in (404, 422), (bad, r.text)
        assert r.json()["code"] in ("validation_error", "not_found")


def test_huge_body_is_413(running_server: RunningServer) -> None:
    r = running_server.client.post(
        NODES,
        content=b"[" + b" " * (17 * 1024 * 1024) + b"]",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"


def test_huge_body_without_content_length_is_413(running_server: RunningServer) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b" " * (1024 * 1024)

    r = running_server.client.post(
        NODES, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"


def test_batch_is_201_and_all_or_nothing(running_server: RunningServer) -> None:
    c = running_server.client
    batch = [node(f"b{i}") for i in range(5)]
    r = c.post(f"{NODES}/batch", json=batch)
    assert r.status_code == 201
    assert r.json() == [stored(n) for n in batch]

    # One bad node: nothing of the batch is stored.
    bad = [node("c0"), node("c1"), node("c2", poc_port=0), node("c3")]
    r = c.post(f"{NODES}/batch", json=bad)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"].startswith("2.poc_port")
    # A duplicate of a stored node: nothing stored either (rolled back in the store).
    r = c.post(f"{NODES}/batch", json=[node("c0"), node("b3")])
    assert r.status_code == 409
    assert r.json()["node_id"] == "b3"
    # A duplicate within the batch.
    r = c.post(f"{NODES}/batch", json=[node("d0"), node("d0")])
    assert r.status_code == 409
    assert [n.id for n in running_server.manager.get_nodes()] == [f"b{i}" for i in range(5)]


def test_batch_limit_is_422(running_server: RunningServer) -> None:
    c = running_server.client
    small = {"host": "h", "inference_port": 1, "poc_port": 1}
    r = c.post(f"{NODES}/batch", json=[{"id": f"x{i}", **small} for i in range(1001)])
    assert r.status_code == 422
    assert r.json()["code"] == "batch_too_large"
    assert running_server.manager.get_nodes() == []
    r = c.post(f"{NODES}/batch", json=[{"id": f"x{i}", **small} for i in range(1000)])
    assert r.status_code == 201
    assert len(running_server.manager.get_nodes()) == 1000


def test_put_with_etag_and_412_on_stale(running_server: RunningServer) -> None:
    c = running_server.client
    etag = c.post(NODES, json=node("n1")).headers["etag"]

    r = c.put(f"{NODES}/n1", json=node("n1", host="10.0.0.2"), headers={"If-Match": etag})
    assert r.status_code == 200
    assert r.json()["host"] == "10.0.0.2"
    new_etag = r.headers["etag"]
    assert new_etag != etag
    assert c.get(f"{NODES}/n1").headers["etag"] == new_etag

    # The old ETag is stale now: 412 and nothing written.
    revision = running_server.manager.backend.latest_revision()
    r = c.put(f"{NODES}/n1", json=node("n1", host="10.0.0.3"), headers={"If-Match": etag})
    assert r.status_code == 412
    assert r.json()["code"] == "precondition_failed"
    assert running_server.manager.get_node("n1").host == "10.0.0.2"
    assert running_server.manager.backend.latest_revision() == revision
    r = c.delete(f"{NODES}/n1", headers={"If-Match": etag})
    assert r.status_code == 412

    # A list with the current tag, and "*", match; no If-Match means unconditional.
    r = c.put(
        f"{NODES}/n1", json=node("n1", version="v2"), headers={"If-Match": f'"x", {new_etag}'}
    )
    assert r.status_code == 200
    r = c.put(f"{NODES}/n1", json=node("n1", version="v3"), headers={"If-Match": "*"})
    assert r.status_code == 200
    r = c.put(f"{NODES}/n1", json=node("n1", version="v4"))
    assert r.status_code == 200
    assert running_server.manager.get_node("n1").version == "v4"


def test_put_id_mismatch_is_422(running_server: RunningServer) -> None:
    c = running_server.client
    c.post(NODES, json=node("n1")).raise_for_status()
    r = c.put(f"{NODES}/n1", json=node("n2"))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "id"
    assert running_server.manager.get_node("n1").id == "n1"


def test_unknown_route_and_method(running_server: RunningServer) -> None:
    c = running_server.client
    r = c.get("/admin/v1/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found", "code": "not_found"}
    r = c.patch(f"{NODES}/n1")
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"


def test_http_client_sees_json_errors(running_server: RunningServer) -> None:
    r = httpx.post(f"{running_server.url}{NODES}", json=node("n1", host=""))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/json"


def test_an_update_keeps_the_operators_admin_state(running_server: RunningServer) -> None:
    """Reproduction: a disabled node posted again (its port fixed) came back enabled; the
    predecessor's update kept a node's admin state."""
    c = running_server.client
    assert c.post(NODES, json=node("n1")).status_code == 200
    assert c.post(f"{NODES}/n1/disable").status_code == 200
    fixed = node("n1", poc_port=8081)
    for write in (
        lambda: c.post(NODES, json=fixed),
        lambda: c.put(f"{NODES}/n1", json=fixed),
    ):
        reply = write()
        assert reply.status_code == 200 and reply.json()["is_enabled"] is False, reply.text
        assert reply.json()["poc_port"] == 8081
        listed = c.get(NODES).json()
        assert listed[0]["state"]["admin_state"]["enabled"] is False
    # Said in the body, it is what the body says.
    assert c.post(NODES, json={**fixed, "is_enabled": True}).json()["is_enabled"] is True
    cm = running_server.manager
    cm.set_node_enabled("n1", False)
    cm.update_node(InferenceNodeConfig.model_validate(fixed))  # the library, likewise
    assert cm.get_node("n1").is_enabled is False
    cm.set_nodes([InferenceNodeConfig.model_validate(fixed)])
    assert cm.get_node("n1").is_enabled is False
