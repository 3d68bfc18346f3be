"""Files of the predecessor's eras, written here in the exact layout its Go writer produced
(yaml.v3 through koanf: keys sorted, 4-space indent, ``[]``/``{}`` for empty, the schedule
highest first), upgrade and roll back. Each fixture follows the era's ``apiconfig`` structs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from dapi_config import ConfigManager

# 2025-01 (commit "Add support for worker key configuration"): nodes with a plain list of model
# names and no segments or hardware; seeds with a height; the worker key under key_config; a
# node re-POSTed through the old add handler, so its id is listed twice; a poc_callback_url that
# is no URL (the Go binary took any text).
ERA_2025_01 = """\
api:
    poc_callback_url: localhost
    port: 8080
    public_url: http://join1-api:8080
chain_node:
    account_name: join1
    is_genesis: false
    keyring_backend: test
    keyring_dir: /root/.inference
    seed_api_url: http://genesis-api:8080
    url: http://join1-node:26657
current_height: 4021
current_seed:
    height: 4000
    seed: 8812375817263
    signature: 3045022100ab
key_config:
    worker_private: d29ya2VyLXByaXZhdGUta2V5LWJ5dGVzLWhlcmUtMzI=
    worker_public: d29ya2VyLXB1YmxpYy1rZXktYnl0ZXMtaGVyZS0zMg==
merged_node_config: true
nodes:
    - host: inference1
      id: node1
      inference_port: 5000
      max_concurrent: 500
      models:
        - Qwen/Qwen2.5-7B-Instruct
      poc_port: 8080
    - host: inference2
      id: node2
      inference_port: 5000
      max_concurrent: 100
      models:
        - Qwen/Qwen2.5-7B-Instruct
        - Qwen/QwQ-32B
      poc_port: 8080
    - host: inference1-new
      id: node1
      inference_port: 5050
      max_concurrent: 250
      models:
        - Qwen/Qwen2.5-7B-Instruct
      poc_port: 8081
previous_seed:
    height: 0
    seed: 0
    signature: ""
upcoming_seed:
    height: 0
    seed: 0
    signature: ""
upgrade_plan:
    binaries: {}
    height: 0
    name: ""
"""


@pytest.fixture
def era_2025_01(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(ERA_2025_01)
    path.chmod(0o600)
    return path


def test_2025_01_file_upgrades(era_2025_01: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with ConfigManager.open(era_2025_01) as cm:
        nodes = {n.id: n for n in cm.get_nodes()}
        # Duplicate ids: the last entry wins (the Go broker kept the last), named in a warning.
        assert list(nodes) == ["node1", "node2"]
        assert (nodes["node1"].host, nodes["node1"].inference_port) == ("inference1-new", 5050)
        assert "'node1' listed more than once" in caplog.text
        # models as a plain list of names.
        assert sorted(nodes["node2"].models) == ["Qwen/QwQ-32B", "Qwen/Qwen2.5-7B-Instruct"]
        assert nodes["node2"].models["Qwen/QwQ-32B"].args == []
        # key_config (the worker-key section's 2025 name) is read as ml_node_key_config.
        keys = cm.get_ml_node_key_config()
        assert keys.worker_public == "d29ya2VyLXB1YmxpYy1rZXktYnl0ZXMtaGVyZS0zMg=="
        assert keys.worker_private.startswith("d29ya2VyLXByaXZhdGU")
        # A poc_callback_url the Go binary accepted loads, with a warning.
        assert cm.get_api_config().poc_callback_url == "localhost"
        assert "poc_callback_url 'localhost' is not a URL" in caplog.text
        assert cm.get_height() == 4021
        assert cm.get_current_seed().seed == 8812375817263


def test_2025_01_rollback_gives_its_binary_the_worker_key(
    era_2025_01: Path, tmp_path: Path
) -> None:
    with ConfigManager.open(era_2025_01) as cm:
        out = cm.write_rollback(tmp_path / "rollback.yaml")
    doc = yaml.safe_load(out.read_text())
    # That era's binary reads key_config: it carries the same pair as ml_node_key_config.
    assert doc["key_config"] == doc["ml_node_key_config"]
    assert doc["key_config"]["worker_public"] == "d29ya2VyLXB1YmxpYy1rZXktYnl0ZXMtaGVyZS0zMg=="
    assert [n["id"] for n in doc["nodes"]] == ["node1", "node2"]
    assert doc["api"]["poc_callback_url"] == "localhost"
