"""The admin API driven the way the predecessor's own client drives it: testermint's
``ApplicationAPI.kt`` (``getNodes``, ``addNode``, ``addNodes``, ``removeNode``, ``enableNode``,
``disableNode``, ``setNodesTo``), decoding replies into its data classes (``NodeResponse``,
``InferenceNode``, ``AdminState``) with its snake_case field names. Plus the later
predecessor's ``GET /admin/v1/config`` and ``GET /admin/v1/export/db``, and testermint's
``UpgradeTests`` (``submit upgrade``, ``partialUpgrade``) as far as they touch the config: what
the chain's event listener writes through the library, what the admin client sees, and what
survives the restart onto the new binary."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import httpx
import pytest

from dapi_config import ConfigManager
from dapi_config.crypto import REDACTED
from tests.api.conftest import RunningServer

pytestmark = pytest.mark.both_backends


@dataclass
class InferenceNode:
    """testermint data/inferenceNodes.kt ``InferenceNode`` (optional fields default)."""

    host: str
    inference_port: int
    poc_port: int
    models: dict[str, dict[str, list[str]]]
    id: str
    max_concurrent: int
    inference_segment: str = ""
    poc_segment: str = ""
    node_num: int | None = None
    hardware: list[dict[str, Any]] | None = None
    version: str | None = None

    def body(self) -> dict[str, Any]:
        """What Gson sends: every field that is not null."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> InferenceNode:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class AdminState:
    enabled: bool
    epoch: int


@dataclass
class NodeResponse:
    node: InferenceNode
    admin_state: AdminState | None


class ApplicationApi:
    """The admin calls of testermint's ``ApplicationAPI``."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def get_nodes(self) -> list[NodeResponse]:
        response = self.client.get("/admin/v1/nodes")
        response.raise_for_status()
        out = []
        for item in response.json():
            state = item["state"].get("admin_state")
            out.append(
                NodeResponse(
                    InferenceNode.decode(item["node"]),
                    None if state is None else AdminState(state["enabled"], state["epoch"]),
                )
            )
        return out

    def add_node(self, node: InferenceNode) -> InferenceNode:
        response = self.client.post("/admin/v1/nodes", json=node.body())
        response.raise_for_status()
        return InferenceNode.decode(response.json())

    def add_nodes(self, nodes: list[InferenceNode]) -> list[InferenceNode]:
        response = self.client.post("/admin/v1/nodes/batch", json=[n.body() for n in nodes])
        response.raise_for_status()
        return [InferenceNode.decode(n) for n in response.json()]

    def remove_node(self, node_id: str) -> str:
        response = self.client.delete(f"/admin/v1/nodes/{node_id}")
        response.raise_for_status()
        return response.text

    def enable_node(self, node_id: str) -> dict[str, Any]:
        response = self.client.post(f"/admin/v1/nodes/{node_id}/enable")
        response.raise_for_status()
        return dict(response.json())

    def disable_node(self, node_id: str) -> dict[str, Any]:
        response = self.client.post(f"/admin/v1/nodes/{node_id}/disable")
        response.raise_for_status()
        return dict(response.json())

    def set_nodes_to(self, nodes: list[InferenceNode]) -> None:
        for existing in self.get_nodes():
            self.remove_node(existing.node.id)
        self.add_nodes(nodes)


def ml_node(node_id: str, port: int = 8080) -> InferenceNode:
    return InferenceNode(
        host=f"{node_id}-host",
        inference_port=port,
        poc_port=port + 1,
        models={"Qwen/Qwen2.5-7B-Instruct": {"args": ["--quantization", "fp8"]}},
        id=node_id,
        max_concurrent=500,
    )


def as_returned(node: InferenceNode) -> InferenceNode:
    """``node`` as the service answers it: empty hardware and version filled in."""
    return replace(node, hardware=node.hardware or [], version=node.version or "")


def test_testermint_node_management_flow(running_server: RunningServer) -> None:
    api = ApplicationApi(running_server.client)
    assert api.get_nodes() == []
    api.set_nodes_to([ml_node("mlnode1"), ml_node("mlnode2", 9090)])
    listed = api.get_nodes()
    assert [r.node.id for r in listed] == ["mlnode1", "mlnode2"]
    assert listed[0].node == as_returned(ml_node("mlnode1"))
    assert all(r.admin_state == AdminState(enabled=True, epoch=0) for r in listed)

    assert api.disable_node("mlnode2") == {
        "message": "node disabled successfully",
        "node_id": "mlnode2",
    }
    assert [r.admin_state.enabled for r in api.get_nodes() if r.admin_state] == [True, False]
    api.enable_node("mlnode2")

    # Re-adding an id (the predecessor's add handler replaced it) and replacing the set.
    changed = ml_node("mlnode1", 7000)
    assert api.add_node(changed) == as_returned(changed)
    assert [r.node.inference_port for r in api.get_nodes()] == [7000, 9090]
    api.set_nodes_to([ml_node("mlnode3")])
    assert [r.node.id for r in api.get_nodes()] == ["mlnode3"]
    assert '"id":"mlnode3"' in api.remove_node("mlnode3").replace(" ", "")
    assert api.get_nodes() == []


def test_get_config_is_the_merged_configuration_redacted(running_server: RunningServer) -> None:
    cm = running_server.manager
    cm.create_worker_key()
    cm.set_height(77)
    body = running_server.client.get("/admin/v1/config").json()
    assert body["current_height"] == 77
    assert body["ml_node_key_config"]["worker_private"] == REDACTED
    assert body["api"]["admin_server_port"] == cm.get_api_config().admin_server_port


def test_export_db_has_every_table_with_secrets_redacted(running_server: RunningServer) -> None:
    cm = running_server.manager
    api = ApplicationApi(running_server.client)
    api.add_node(ml_node("n1"))
    issued = cm.create_security_key("n1")
    cm.create_worker_key()
    body = running_server.client.get("/admin/v1/export/db").json()
    tables = body["tables"]
    assert {"inference_nodes", "chain_state", "seed_info", "audit_log", "secrets"} <= set(tables)
    assert [row["id"] for row in tables["inference_nodes"]] == ["n1"]
    assert [row["security_key"] for row in tables["mlnode_security"]] == [REDACTED]
    assert {row["value"] for row in tables["secrets"]} == {REDACTED}
    assert issued.security_key not in running_server.client.get("/admin/v1/export/db").text


def _testermint_node(node_id: str) -> InferenceNode:
    """The node testermint's NodeManagementTests add: a host written as a URL."""
    return InferenceNode(
        host="http://localhost:8080",
        models={"Qwen/Qwen2.5-7B-Instruct": {"args": []}},
        id=node_id,
        poc_port=100,
        inference_port=200,
        max_concurrent=1,
    )


def test_testermint_node_management_tests_pass(
    running_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Its `add node`, `remove nodes` and `add multiple nodes` tests, as they ran against the
    Go binary (reproduction: 422 for the host, so that suite no longer passed)."""
    api = ApplicationApi(running_server.client)
    with caplog.at_level("WARNING", logger="dapi_config.api"):
        node = api.add_node(_testermint_node("node2"))
    assert node.host == "http://localhost:8080"  # stored as given, and said in the log
    assert "host 'http://localhost:8080' is not a DNS name or an IP address" in caplog.text
    assert any(r.node.id == "node2" for r in api.get_nodes())

    api.add_node(_testermint_node("nodeToRemove"))
    api.remove_node("nodeToRemove")
    assert all(r.node.id != "nodeToRemove" for r in api.get_nodes())

    first, second = api.add_nodes([_testermint_node("multinode1"), _testermint_node("multinode2")])
    assert (first.id, second.id) == ("multinode1", "multinode2")
    assert {"multinode1", "multinode2"} <= {r.node.id for r in api.get_nodes()}


def test_testermint_partial_upgrade_flow(running_server: RunningServer) -> None:
    """``partialUpgrade``: every participant adds a node of the new version through the admin
    API; the governance proposal schedules that version at a height; once the chain passes it
    the current version is the new one, and the nodes of that version are the ones to use."""
    cm = running_server.manager
    api = ApplicationApi(running_server.client)
    cm.set_height(1_000)
    api.add_node(ml_node("mlnode1"))
    v1 = replace(ml_node("v1Node"), host="join1-wiremock", inference_segment="/newVersion",
                 version="v1")  # fmt: skip
    assert api.add_node(v1) == as_returned(v1)
    effective = 1_040
    assert cm.add_node_version(effective, "v1")  # the listener, on the proposal's event
    overview = running_server.client.get("/admin/v1/overview").json()
    assert overview["next_version"] == {"height": effective, "version": "v1"}
    assert overview["current_node_version"] == ""
    for height in range(1_001, effective + 11):  # a block at a time, as the listener sets it
        cm.set_height(height)
    config = running_server.client.get("/admin/v1/config").json()
    assert config["current_node_version"] == "v1" and config["current_height"] == effective + 10
    listed = {r.node.id: r.node for r in api.get_nodes()}
    assert [i for i, n in listed.items() if n.version == config["current_node_version"]] == [
        "v1Node"
    ]
    assert listed["v1Node"].inference_segment == "/newVersion"


def test_testermint_submit_upgrade_flow(
    running_server: RunningServer, state_env: dict[str, str]
) -> None:
    """``submit upgrade``: the proposal's plan (name, height, binaries by platform with their
    checksums) is kept from the event until the new binary, started after the restart, reads
    it, and the admin client sees it in the predecessor's layout throughout."""
    cm = running_server.manager
    cm.set_height(5_000)
    binaries = {
        "linux/amd64": "http://genesis-wiremock:8080/v2/dapi/decentralized-api-amd64.zip"
        "?checksum=sha256:" + "ab" * 32
    }
    cm.set_upgrade_plan({"name": "v0.0.1test", "height": 5_030, "binaries": binaries})
    plan = running_server.client.get("/admin/v1/config").json()["upgrade_plan"]
    assert plan == {"name": "v0.0.1test", "height": 5_030, "binaries": binaries,
                    "node_version": ""}  # fmt: skip
    for height in range(5_001, 5_029):
        cm.set_height(height)
    # The binary is swapped at the plan's height: the next process reads the same state.
    with ConfigManager.open(cm.config_path, env=state_env) as restarted:
        assert restarted.get_height() == 5_028
        after = restarted.get_upgrade_plan()
        assert (after.name, after.height, after.binaries) == ("v0.0.1test", 5_030, binaries)
