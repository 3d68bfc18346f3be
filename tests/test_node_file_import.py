"""NODE_CONFIG_PATH is merged once; `dapi-config nodes import FILE [--replace]` re-applies it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from dapi_config import ConfigError, ConfigManager, DuplicateNodeError
from tests.conftest import run_cli, sqlite_file
from tests.legacy.test_migrate import GO_WRITER, write

NODES: list[dict[str, Any]] = [
    {
        "id": "mlnode1",
        "host": "ml-1",
        "inference_segment": "/api/v1",
        "inference_port": 5000,
        "poc_segment": "/api/v1",
        "poc_port": 8080,
        "models": {"Qwen/Qwen2.5-7B-Instruct": {"args": ["--quantization", "fp8"]}},
        "max_concurrent": 500,
        "hardware": [{"type": "H100", "count": 8}],
    },
    {
        "id": "mlnode2",
        "host": "ml-2",
        "inference_port": 5000,
        "poc_port": 8080,
        "models": {"Qwen/QwQ-32B": {"Args": []}},
        "comment": "an unknown key: kept with the node (the predecessor's decoder ignored it)",
    },
]


def node_file(tmp_path: Path, nodes: list[dict[str, Any]], name: str = "nodes.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(nodes, indent=2))
    return path


def node_imports(state: Path) -> int:
    with sqlite_file(state) as conn:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM legacy_imports WHERE kind = 'node_config'"
            ).fetchone()[0]
        )


def test_node_config_path_is_merged_once(
    config_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = node_file(tmp_path, NODES)
    env = {"NODE_CONFIG_PATH": str(path)}
    with ConfigManager.open(config_file, env=env) as cm:
        nodes = cm.get_nodes()
        assert [n.id for n in nodes] == ["mlnode1", "mlnode2"]
        assert nodes[0].models["Qwen/Qwen2.5-7B-Instruct"].args == ["--quantization", "fp8"]
        assert nodes[1].model_extra == {"comment": NODES[1]["comment"]}
        assert cm.export_full_config()["merged_node_config"] is True
        cm.remove_node("mlnode2")
    with (
        caplog.at_level(logging.INFO, logger="dapi_config.legacy"),
        ConfigManager.open(config_file, env=env) as cm,
    ):
        # Not merged again: the operator's removal stands.
        assert [n.id for n in cm.get_nodes()] == ["mlnode1"]
    assert any(
        "NODE_CONFIG_PATH" in r.message
        and "already merged" in r.message
        and "--replace" in r.message
        for r in caplog.records
    )
    assert node_imports(tmp_path / "state.db") == 1


def test_legacy_merged_flag_means_never_merge(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)  # merged_node_config: true
    path = node_file(tmp_path, NODES)
    with ConfigManager.open(config, env={"NODE_CONFIG_PATH": str(path)}) as cm:
        assert [n.id for n in cm.get_nodes()] == ["node1", "node2", "3"]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([NODES[0], NODES[0]], "'mlnode1' is listed twice"),
        ([{**NODES[0], "inference_port": "http"}], "nodes[0].inference_port"),
        # One node, taken as a list of one; a host Go's decoder could not read into a string.
        ({"id": "x", "host": ["a"]}, "nodes[0].host"),
        ("text", "expected a node or a list of nodes"),
    ],
)
def test_bad_node_file_imports_nothing(
    config_file: Path, tmp_path: Path, nodes: Any, message: str
) -> None:
    path = node_file(tmp_path, nodes)
    with pytest.raises(ConfigError) as info:
        ConfigManager.open(config_file, env={"NODE_CONFIG_PATH": str(path)})
    assert message in str(info.value)
    with ConfigManager.open(config_file) as cm:
        assert cm.get_nodes() == []
        assert cm.backend.find_import("node_config") is None


def test_node_file_not_json_or_missing(config_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "a",}]')
    with pytest.raises(ConfigError, match=r"not valid JSON.*line 1"):
        ConfigManager.open(config_file, env={"NODE_CONFIG_PATH": str(bad)})
    dup = tmp_path / "dupkey.json"
    dup.write_text('[{"id": "a", "id": "b"}]')
    with pytest.raises(ConfigError, match="duplicate key 'id'"):
        ConfigManager.open(config_file, env={"NODE_CONFIG_PATH": str(dup)})
    with pytest.raises(ConfigError, match="not found"):
        ConfigManager.open(config_file, env={"NODE_CONFIG_PATH": str(tmp_path / "none.json")})


def test_duplicate_against_registry_imports_nothing(config_file: Path, tmp_path: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(
            __import__("dapi_config").InferenceNodeConfig(
                id="mlnode2", host="other", inference_port=1, poc_port=2
            )
        )
        with pytest.raises(DuplicateNodeError, match="already registered"):
            cm.import_nodes_file(node_file(tmp_path, NODES))
        assert [n.id for n in cm.get_nodes()] == ["mlnode2"]
        replaced = cm.import_nodes_file(node_file(tmp_path, NODES), replace=True)
        assert [n.id for n in replaced] == ["mlnode1", "mlnode2"]
        assert cm.get_node("mlnode2").host == "ml-2"


def test_cli_nodes_import(config_file: Path, tmp_path: Path) -> None:
    path = node_file(tmp_path, NODES)
    result = run_cli("--config", str(config_file), "nodes", "import", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert [n["id"] for n in json.loads(result.stdout)] == ["mlnode1", "mlnode2"]
    again = run_cli("--config", str(config_file), "nodes", "import", str(path))
    assert again.returncode == 1
    assert again.stdout == ""
    assert "already registered" in again.stderr and "--replace" in again.stderr
    one = node_file(tmp_path, [NODES[1]], "one.json")
    replaced = run_cli("--config", str(config_file), "nodes", "import", str(one), "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "replaced" in replaced.stdout
    listed = run_cli("--config", str(config_file), "nodes", "list", "--json")
    assert [n["id"] for n in json.loads(listed.stdout)] == ["mlnode2"]
    missing = run_cli("--config", str(config_file), "nodes", "import", str(tmp_path / "x.json"))
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_node_config_path_in_yaml_mode(config_file: Path, tmp_path: Path) -> None:
    path = node_file(tmp_path, NODES)
    env = {"NODE_CONFIG_PATH": str(path), "API_STATE_MODE": "yaml"}
    with ConfigManager.open(config_file, env=env) as cm:
        assert [n.id for n in cm.get_nodes()] == ["mlnode1", "mlnode2"]
        cm.remove_node("mlnode1")
    with ConfigManager.open(config_file, env=env) as cm:
        assert [n.id for n in cm.get_nodes()] == ["mlnode2"]
    assert "merged_node_config: true" in config_file.read_text()


def test_edited_node_file_is_warned_about_in_once_mode(
    config_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reproduction (gonka issue #415): an edited NODE_CONFIG_PATH file (a Kubernetes
    ConfigMap) was silently ignored on restart."""
    path = node_file(tmp_path, NODES)
    env = {"NODE_CONFIG_PATH": str(path)}
    with ConfigManager.open(config_file, env=env):
        pass
    node_file(tmp_path, NODES[:1])
    with ConfigManager.open(config_file, env=env) as cm:
        assert [n.id for n in cm.get_nodes()] == ["mlnode1", "mlnode2"]  # once: not applied
    (warning,) = [
        r.getMessage() for r in caplog.records if "changed since it was merged" in r.getMessage()
    ]
    assert f"dapi-config nodes import {path} --replace" in warning
    assert "NODE_CONFIG_MODE=sync" in warning
    assert node_imports(tmp_path / "state.db") == 1


def test_sync_mode_makes_the_file_authoritative(config_file: Path, tmp_path: Path) -> None:
    path = node_file(tmp_path, NODES)
    env = {"NODE_CONFIG_PATH": str(path), "NODE_CONFIG_MODE": "sync"}
    with ConfigManager.open(config_file, env=env) as cm:
        cm.add_node({"id": "by-api", "host": "h", "inference_port": 1, "poc_port": 2})  # type: ignore[arg-type]
    with ConfigManager.open(config_file, env=env) as cm:  # unchanged file: nothing replaced
        assert [n.id for n in cm.get_nodes()] == ["mlnode1", "mlnode2", "by-api"]
    node_file(tmp_path, NODES[1:])
    with ConfigManager.open(config_file, env=env) as cm:
        assert [n.id for n in cm.get_nodes()] == ["mlnode2"]
        assert [b.reason for b in cm.list_backups()] == ["pre-node-file-replace"]
    assert node_imports(tmp_path / "state.db") == 2


def test_bad_node_config_mode_is_a_clear_error(config_file: Path) -> None:
    with pytest.raises(ConfigError, match="NODE_CONFIG_MODE: expected once or sync"):
        ConfigManager.open(config_file, env={"NODE_CONFIG_MODE": "always"})


def test_merged_flag_of_a_legacy_file_adopts_the_node_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After migrating a file with merged_node_config: true the node file is not merged (as
    the predecessor), and is taken as the merged one, so a later edit is warned about."""
    config = write(tmp_path, GO_WRITER)
    path = node_file(tmp_path, NODES)
    env = {"NODE_CONFIG_PATH": str(path)}
    with ConfigManager.open(config, env=env) as cm:
        assert "mlnode1" not in [n.id for n in cm.get_nodes()]
    assert not [r for r in caplog.records if "changed since it was merged" in r.getMessage()]
    node_file(tmp_path, NODES[:1])
    with ConfigManager.open(config, env=env):
        pass
    assert [r for r in caplog.records if "changed since it was merged" in r.getMessage()]


def test_a_node_file_replace_keeps_disabled_nodes_disabled(
    config_file: Path, tmp_path: Path
) -> None:
    path = node_file(tmp_path, NODES)
    env = {"NODE_CONFIG_PATH": str(path), "NODE_CONFIG_MODE": "sync"}
    with ConfigManager.open(config_file, env=env) as cm:
        cm.set_node_enabled("mlnode1", False)
    changed = [{**NODES[0], "max_concurrent": 400}, NODES[1]]
    node_file(tmp_path, changed)
    with ConfigManager.open(config_file, env=env) as cm:
        assert cm.get_node("mlnode1").max_concurrent == 400  # the file applied...
        assert cm.get_node("mlnode1").is_enabled is False  # ...and the operator's choice kept
        assert cm.get_node("mlnode2").is_enabled is True
