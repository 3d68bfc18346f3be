"""The 2024 ``url`` era and the later eras (``base_url`` nodes with an ``auth_token``,
``model_override``, ``poc_params``, new cache fields), each written in its Go writer's layout
(keys sorted, 4-space indent, every struct field present): they upgrade, nothing in them is
dropped, and the rollback gives their binary the same values back."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dapi_config import ConfigManager
from dapi_config._yaml import parse_yaml, to_plain
from dapi_config.models import REDACTED
from tests._examples import examples
from tests.conftest import sqlite_file

# 2024-12 (gonka's own config_test.go fixture of that time): a node is only a URL, models a
# plain list of names, seeds carry a height, the signer key under account_name.
ERA_2024_URL = """\
api:
    port: 8080
chain_node:
    account_name: join1
    keyring_backend: test
    keyring_dir: /root/.inference
    url: http://join1-node:26657
current_height: 393
current_seed:
    height: 380
    seed: 3898730504561900192
    signature: 815794b7bbb414900a84c8a543ffc96a3ebb5fbbd0175648eaf5f60897b786df
nodes:
    - id: node1
      max_concurrent: 500
      models:
        - unsloth/llama-3-8b-Instruct
      url: http://34.171.235.205:8080/
previous_seed:
    height: 370
    seed: 1370553182438852893
    signature: 1d1f9fc6f44840af03368ce24e0335834181e42a9a45c81d7a17e14866729fa8
upcoming_seed:
    height: 390
    seed: 254929314898674592
    signature: 75296c164d43e5570c44c88176c7988e7d52d3e44be6c43e8e6c8f07327279
upgrade_plan:
    binaries: {}
    height: 0
    name: ""
"""

# The later era (apiconfig after the BaseURL mode and model overrides): one node in base_url
# mode (host "", ports 0, a bearer token), one host-mode node with a model override; the
# caches' new fields, poc_params, tx_batching and early_share_guard as that writer emits them.
TOKEN = "tok-9f8e7d6c5b4a"
ERA_BASE_URL = f"""\
api:
    admin_server_port: 9200
    ml_grpc_server_port: 9300
    ml_server_port: 9100
    mlnode_metrics_disabled: false
    node_manager_grpc_port: 9400
    port: 8080
    public_server_port: 9000
    public_url: http://node.example:8000
bandwidth_params:
    estimated_limits_per_block_kb: 21000
    kb_per_input_token: 0.0023
    kb_per_output_token: 0.64
    max_inferences_per_block: 400
chain_node:
    account_public_key: Ay0dVEXAMPLE
    is_genesis: false
    keyring_backend: file
    keyring_dir: /root/.inference
    min_gas_price_ngonka: 0
    seed_api_url: http://seed.example:8000
    signer_key_name: node-key
    url: http://chain:26657
current_height: 812345
current_node_version: v3.0.8
current_seed:
    claimed: true
    epoch_index: 140
    seed: -4211086381284711933
    signature: 3045022100cafe
early_share_guard:
    first_fraction: 0.3333333333333333
    mode: enforce
    require_inclusion_proof: true
    threshold_ratio: 0.5
last_processed_height: 812344
last_used_version: v3.0.8
merged_node_config: true
ml_node_key_config:
    worker_private: ""
    worker_public: ""
nats:
    host: 0.0.0.0
    max_messages_age_seconds: 86400
    port: 4222
nodes:
    - auth_token: {TOKEN}
      base_url: https://svc.provider.example/v1
      hardware: []
      host: ""
      id: cloud-1
      inference_port: 0
      inference_segment: ""
      max_concurrent: 64
      models:
        Qwen/Qwen3-235B-A22B-Instruct-2507-FP8:
            args: []
      poc_port: 0
      poc_segment: ""
    - auth_token: ""
      base_url: ""
      hardware:
        - count: 8
          type: H200
      host: mlnode-a
      id: gpu-a
      inference_port: 5000
      inference_segment: /v1
      max_concurrent: 500
      models:
        Qwen/Qwen3-32B:
            args:
                - --tensor-parallel-size
                - "8"
            model_override:
                hf_commit: 0123456789abcdef0123456789abcdef01234567
                hf_repo: acme/Qwen3-32B-tuned
      poc_port: 8080
      poc_segment: /api/v1
poc_params:
    models:
        - model_id: Qwen/Qwen3-32B
          seq_len: 1024
previous_seed:
    claimed: true
    epoch_index: 139
    seed: 7718823310010291
    signature: 3045022100beef
tx_batching:
    disabled: false
    poc_commit_interval_seconds: 5
    validation_v2_flush_size: 100
    validation_v2_flush_timeout_seconds: 3
upcoming_seed:
    claimed: false
    epoch_index: 141
    seed: 99812377
    signature: 3045022100f00d
upgrade_plan:
    binaries: {{}}
    height: 0
    name: ""
    node_version: ""
validation_params:
    expiration_blocks: 20
    logprobs_mode: full
    timestamp_advance: 30
    timestamp_expiration: 60
"""


def write_config(directory: Path, text: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def go_zero(value: Any) -> bool:
    """A value the Go loader reads the same as an absent key (the zero value)."""
    if isinstance(value, dict):
        return all(go_zero(v) for v in value.values())
    return value in (None, 0, "", False) or value == []


def missing_from(given_value: Any, back: Any, path: str = "") -> list[str]:
    """Where ``back`` (a rollback) lost or changed something of ``given_value`` (a file):
    absent keys count only when their value was not Go's zero value."""
    if isinstance(given_value, dict):
        if not isinstance(back, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in given_value.items():
            if key not in back:
                if not go_zero(value):
                    out.append(f"{path}.{key}")
                continue
            out += missing_from(value, back[key], f"{path}.{key}")
        return out
    if isinstance(given_value, list) and isinstance(back, list) and len(given_value) == len(back):
        return [
            p for i, v in enumerate(given_value) for p in missing_from(v, back[i], f"{path}[{i}]")
        ]
    return [] if given_value == back else [path or "."]


def test_2024_url_era_upgrades_and_rolls_back(tmp_path: Path) -> None:
    config = write_config(tmp_path, ERA_2024_URL)
    with ConfigManager.open(config) as cm:
        (node,) = cm.get_nodes()
        assert node.url == "http://34.171.235.205:8080/"
        assert (node.host, node.inference_port, node.poc_port) == ("", 0, 0)
        assert list(node.models) == ["unsloth/llama-3-8b-Instruct"]
        assert cm.get_current_seed().model_extra == {"height": 380}
        out = cm.write_rollback(tmp_path / "rollback.yaml")
    back = yaml.safe_load(out.read_text())
    assert missing_from(yaml.safe_load(ERA_2024_URL), back) == []
    assert back["nodes"][0]["url"] == "http://34.171.235.205:8080/"
    assert back["current_seed"]["height"] == 380


def test_base_url_era_upgrades_keeping_every_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = write_config(tmp_path, ERA_BASE_URL)
    with ConfigManager.open(config) as cm:
        nodes = {n.id: n for n in cm.get_nodes()}
        cloud, gpu = nodes["cloud-1"], nodes["gpu-a"]
        assert cloud.base_url == "https://svc.provider.example/v1"
        assert (cloud.host, cloud.inference_port, cloud.poc_port) == ("", 0, 0)
        assert cloud.auth_token is not None
        assert cloud.auth_token.get_secret_value() == TOKEN
        assert gpu.auth_token is None  # "" in the file: no token
        override = gpu.models["Qwen/Qwen3-32B"].model_override
        assert override is not None and override.hf_repo == "acme/Qwen3-32B-tuned"
        assert cm.get_validation_params().logprobs_mode == "full"
        assert cm.get_bandwidth_params().max_inferences_per_block == 400
        assert cm.get_poc_params().models[0].model_id == "Qwen/Qwen3-32B"
        assert cm.get_current_seed().claimed is True
        # Reads and exports never show the token.
        assert cloud.model_dump(mode="json")["auth_token"] == REDACTED
        exported = cm.export_full_config()
        assert {n["id"]: n for n in exported["nodes"]}["cloud-1"]["auth_token"] == REDACTED
        assert TOKEN not in json.dumps(exported)
        assert TOKEN not in caplog.text
    # Sealed at rest: the token's bytes are nowhere in the state file.
    state = tmp_path / "state.db"
    assert TOKEN.encode() not in state.read_bytes()
    with sqlite_file(state) as conn:
        (sealed,) = conn.execute(
            "SELECT auth_token FROM inference_nodes WHERE id = 'cloud-1'"
        ).fetchone()
    assert sealed.startswith("v1.")
    # The static file keeps the later eras' own sections.
    static = yaml.safe_load(config.read_text())
    assert static["tx_batching"]["validation_v2_flush_size"] == 100
    assert static["early_share_guard"]["mode"] == "enforce"
    assert "poc_params" not in static and "nodes" not in static


def test_base_url_era_rollback_gives_every_value_back(tmp_path: Path) -> None:
    config = write_config(tmp_path, ERA_BASE_URL)
    with ConfigManager.open(config) as cm:
        out = cm.write_rollback(tmp_path / "rollback.yaml")
    back = yaml.safe_load(out.read_text())
    assert missing_from(yaml.safe_load(ERA_BASE_URL), back) == []
    cloud = {n["id"]: n for n in back["nodes"]}["cloud-1"]
    assert cloud["auth_token"] == TOKEN  # the old binary needs it in clear
    # Fields of other eras are written only when set: a host-mode node carries no base_url.
    gpu = {n["id"]: n for n in back["nodes"]}["gpu-a"]
    assert "base_url" not in gpu and "auth_token" not in gpu and "url" not in gpu


def test_a_node_with_no_address_is_kept_and_flagged_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its binary loaded a node with neither host and ports nor a base URL (its broker then
    failed to reach it): the upgrade takes it as it was and says so, instead of stopping."""
    text = ERA_BASE_URL.replace(
        "      base_url: https://svc.provider.example/v1\n", '      base_url: ""\n'
    )
    config = write_config(tmp_path, text)
    with caplog.at_level(logging.WARNING), ConfigManager.open(config) as cm:
        node = cm.get_node("cloud-1")
        assert (node.host, node.inference_port, node.poc_port, node.base_url) == ("", 0, 0, "")
    flagged = [r.getMessage() for r in caplog.records if "cloud-1" in r.getMessage()]
    assert any("no host" in m and "no poc_port" not in m for m in flagged), flagged
    assert all(TOKEN not in m for m in caplog.messages)
    assert _has_nodes(tmp_path / "state.db")


def _has_nodes(state: Path) -> bool:
    with sqlite_file(state) as conn:
        return bool(conn.execute("SELECT COUNT(*) FROM inference_nodes").fetchone()[0])


# --- the property: whatever the Go writer could produce survives migrate -> rollback --------

_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=10).map(lambda s: "x_" + s)
_scalars = st.one_of(
    st.integers(-(2**40), 2**40),
    # Text starts with a letter: PyYAML (YAML 1.1) leaves "1e3" or "0o7" unquoted, which YAML
    # 1.2 (the Go decoder's, and this product's) reads as numbers; the Go writer quotes them.
    st.text("abcdefghijklmnopqrstuvwxyz0123456789 -./", max_size=20).map(lambda s: "s" + s),
    st.booleans(),
)
_extras = st.dictionaries(
    _names,
    st.one_of(
        _scalars, st.lists(_scalars, max_size=3), st.dictionaries(_names, _scalars, max_size=2)
    ),
    max_size=3,
)
_text = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=12).map(lambda s: "t" + s)


@st.composite
def go_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A legacy document as some era's Go writer (plus unknown later fields) could write it."""
    ids = draw(st.lists(_text.map(lambda s: "n" + s), max_size=4, unique=True))
    nodes = []
    for node_id in ids:
        node: dict[str, Any] = {
            "id": node_id,
            "max_concurrent": draw(st.integers(0, 1000)),
            "models": {
                name: {"args": draw(st.lists(_text, max_size=2)), **draw(_extras)}
                for name in draw(st.lists(_text, max_size=2, unique=True))
            },
            "hardware": [
                {"type": t, "count": draw(st.integers(0, 16)), **draw(_extras)}
                for t in draw(st.lists(_text, max_size=2))
            ],
            **draw(_extras),
        }
        if draw(st.booleans()):
            # A host name label does not end with "-" (refused since the field limits).
            node.update(host=draw(_text).rstrip("-"), inference_port=5000, poc_port=8080)
        else:
            node.update(base_url="https://svc.example/" + draw(_text), auth_token=draw(_text))
        nodes.append(node)
    seed = {
        "seed": draw(st.integers(-(2**63), 2**63 - 1)),
        "epoch_index": draw(st.integers(0, 2**64 - 1)),
        "signature": draw(_text),
        **draw(_extras),
    }
    return {
        "api": {"port": 8080},
        "nodes": nodes,
        "current_height": draw(st.integers(0, 2**62)),
        "current_seed": seed,
        "upgrade_plan": {
            "name": draw(_text),
            "height": draw(st.integers(0, 2**40)),
            "binaries": {},
            **draw(_extras),
        },
        "validation_params": {"timestamp_expiration": 60, **draw(_extras)},
        "bandwidth_params": {"estimated_limits_per_block_kb": 7, **draw(_extras)},
        "poc_params": {"models": [{"model_id": draw(_text), "seq_len": 256, **draw(_extras)}]},
    }


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=go_documents())
def test_any_go_written_mapping_survives_migrate_and_rollback(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any]
) -> None:
    directory = tmp_path_factory.mktemp("era")
    # PyYAML, not this project's writer, renders the file: keys sorted, 4-space indent.
    config = write_config(directory, yaml.safe_dump(document, sort_keys=True, indent=4))
    with ConfigManager.open(config) as cm:
        out = cm.write_rollback(directory / "rollback.yaml")
    # Read back as the Go decoder does: YAML 1.2 (``on`` stays a string).
    back = to_plain(parse_yaml(out.read_bytes(), str(out)))
    assert missing_from(document, back) == []
