"""The predecessor as it is really deployed: what its Go binary accepted upgrades.

Readers of legacy data follow the Go decoder: a zero means what it meant there (a port of 0 is
"not set", the binary's default applies), and a value the binary accepted is imported as it
was, kept for the rollback, flagged (a warning at migrate, a line in ``check``), never the
reason an upgrade stops. New input is still validated strictly. Each file below is in the
shape its producer writes: the repository's own hand-written configs, and the static copy
the newest binary writes back for a ``deploy/join`` node (keys sorted, 4-space indent, every
struct field, zeros included)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from dapi_config import ConfigError, ConfigManager
from tests.conftest import run_cli

# Shape of the repository's decentralized-api/config.yaml (and eight earlier versions): a node
# with no poc_port (Go read 0), models as plain names, the signer key under account_name.
REPO_CONFIG = """\
api:
  port: 8080
  poc_callback_url: http://localhost:8080
  public_url: http://localhost:8080
nodes:
  - id: node1
    host: localhost
    inference_port: 2020
    max_concurrent: 1
    models:
      - Qwen/Qwen2.5-7B-Instruct
chain_node:
  url: http://localhost:26657
  account_name: "alice"
  keyring_backend: "test"
  keyring_dir: "~/.inference" # We use a custom function to expand ~ to /root
  is_genesis: false
"""

# Shape of its config-local.yaml (eight versions): a host written with a port and a slash.
REPO_LOCAL = """\
api:
  port: 8080
  poc_callback_url: http://localhost:8080
nodes:
  - id: node1
    host:  203.0.113.7:8080/ # Deployed inference node
    inference_port: 8080
    poc_port: 8080
    models:
      - Qwen/Qwen2.5-7B-Instruct
    max_concurrent: 10
chain_node:
  url: http://localhost:26657
  account_name: "alice"
  keyring_backend: "test"
  keyring_dir: "~/.inference"
"""

# What the binary of a deploy/join node writes back (compose sets neither the gRPC port nor
# NATS, so both are written as Go's zero values).
DEPLOY_JOIN_WRITTEN = """\
api:
    admin_server_port: 9200
    ml_grpc_callback_address: ""
    ml_grpc_server_port: 0
    ml_server_port: 9100
    poc_callback_url: http://api:9100
    port: 8080
    public_server_port: 9000
    public_url: http://198.51.100.20:8000
    test_mode: false
chain_node:
    account_public_key: Ah5rRHJgTlWj2XqMwE3jk0Wt8xKxp7cCE8YmFfNWn0dL
    is_genesis: false
    keyring_backend: file
    keyring_dir: /root/.inference
    seed_api_url: http://node2.gonka.ai:8000
    signer_key_name: join1
    url: http://node:26657
current_height: 412977
current_node_version: ""
merged_node_config: true
ml_node_key_config:
    worker_private: ""
    worker_public: ""
nats:
    host: ""
    port: 0
nodes:
    - hardware: []
      host: join1-mlnode
      id: mlnode1
      inference_port: 5000
      inference_segment: /api/v1
      max_concurrent: 500
      models:
        Qwen/Qwen2.5-7B-Instruct:
            args:
                - --quantization
                - fp8
      poc_port: 8080
      poc_segment: /api/v1
upgrade_plan:
    binaries: {}
    height: 0
    name: ""
"""


def _write(directory: Path, text: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_repositorys_own_config_with_a_node_without_poc_port_upgrades(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _write(tmp_path, REPO_CONFIG)
    with caplog.at_level(logging.WARNING), ConfigManager.open(config) as cm:
        node = cm.get_node("node1")
        assert (node.host, node.inference_port, node.poc_port) == ("localhost", 2020, 0)
        back = yaml.safe_load(cm.write_rollback(tmp_path / "rollback.yaml").read_text())
    assert "nodes[0] (node1): no poc_port" in caplog.text
    assert back["nodes"][0]["poc_port"] == 0  # what its binary read, given back


def test_a_host_the_binary_accepted_is_kept_as_it_was_and_listed_by_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _write(tmp_path, REPO_LOCAL)
    migrated = run_cli("--config", str(config), "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "host '203.0.113.7:8080/' is not a DNS name or an IP address" in migrated.stderr
    with ConfigManager.open(config) as cm:
        assert cm.get_node("node1").host == "203.0.113.7:8080/"  # byte for byte
        rollback = cm.write_rollback(tmp_path / "rollback.yaml").read_text()
    assert "host: 203.0.113.7:8080/\n" in rollback
    checked = run_cli("--config", str(config), "check")
    assert "kept_as_the_predecessor_accepted:" in checked.stdout
    assert "nodes[0] (node1): host '203.0.113.7:8080/'" in checked.stdout


def test_the_static_copy_a_deploy_join_node_writes_back_upgrades(tmp_path: Path) -> None:
    """Reproduction: `expected 1-65535 (got 0)` stopped the upgrade of every such node."""
    config = _write(tmp_path, DEPLOY_JOIN_WRITTEN)
    with ConfigManager.open(config) as cm:
        assert cm.get_api_config().ml_grpc_server_port == 9300  # the binary's own default
        assert cm.get_nats_config().port == 4222
        assert cm.get_height() == 412977 and [n.id for n in cm.get_nodes()] == ["mlnode1"]
    checked = run_cli("--config", str(config), "check")
    assert "api.ml_grpc_server_port: 0 means not set" in checked.stdout
    assert "nats.port: 0 means not set, as it did for the predecessor; 4222 is used" in (
        checked.stdout
    )


def test_a_zero_from_the_environment_is_read_the_same_way(config_file: Path) -> None:
    with ConfigManager.open(config_file, env={"DAPI_NATS__PORT": "0"}) as cm:
        assert cm.get_nats_config().port == 4222


def test_what_its_binary_would_not_have_taken_either_is_still_refused(tmp_path: Path) -> None:
    config = _write(tmp_path, REPO_LOCAL.replace("203.0.113.7:8080/", '"203.0.113.7\\r\\nX: 1"'))
    before = config.read_bytes()
    with pytest.raises(ConfigError, match=r"nodes\[0\]\.host"):
        ConfigManager.open(config)
    assert config.read_bytes() == before
    nats = _write(tmp_path, DEPLOY_JOIN_WRITTEN.replace("    port: 0\n", "    port: 70000\n"))
    with pytest.raises(ConfigError, match=r"nats\.port"):
        ConfigManager.open(nats)


def test_what_was_kept_is_marked_in_the_overview_until_fixed(tmp_path: Path) -> None:
    """The overview (the console's health strip) lists what was kept as the predecessor took
    it: the config file's zeros read as unset, and each node's odd value, with the node's id.
    A fix through the API takes the mark away; a host sent as a URL by the predecessor's own
    client puts one on."""
    from dapi_config.api import create_app
    from tests.api.conftest import serve_app

    local = yaml.safe_load(REPO_LOCAL)
    deployed = yaml.safe_load(DEPLOY_JOIN_WRITTEN)
    deployed["nodes"].append(local["nodes"][0])
    config = _write(tmp_path, yaml.safe_dump(deployed))
    cm = ConfigManager.open(config)
    server = serve_app(create_app(cm), cm)
    try:
        marks = server.client.get("/admin/v1/overview").json()["kept_as_the_predecessor_accepted"]
        notes = {(m["node_id"], m["note"]) for m in marks}
        assert (None, f"{config}: api.ml_grpc_server_port: 0 means not set, as it did for "
                "the predecessor; 9300 is used") in notes  # fmt: skip
        assert (None, f"{config}: nats.port: 0 means not set, as it did for the "
                "predecessor; 4222 is used") in notes  # fmt: skip
        assert ("node1", "host '203.0.113.7:8080/' is not a DNS name or an IP address") in notes
        assert not any(node == "mlnode1" for node, _ in notes)
        fixed = {**local["nodes"][0], "host": "203.0.113.7", "poc_port": 8080}
        assert server.client.post("/admin/v1/nodes", json=fixed).status_code == 200
        marks = server.client.get("/admin/v1/overview").json()["kept_as_the_predecessor_accepted"]
        assert [m for m in marks if m["node_id"] is not None] == []
        sent_as_url = {**fixed, "id": "node2", "host": "http://203.0.113.8:8080"}
        assert server.client.post("/admin/v1/nodes", json=sent_as_url).status_code == 200
        marks = server.client.get("/admin/v1/overview").json()["kept_as_the_predecessor_accepted"]
        assert [m["node_id"] for m in marks if m["node_id"] is not None] == ["node2"]
    finally:
        server.stop()
        cm.close()
