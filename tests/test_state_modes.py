"""API_STATE_MODE: db (default), dual (legacy-layout mirror after every commit), yaml (the
legacy single file, no database). Switching modes loses nothing; every file stays valid."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dapi_config import (
    BandwidthParamsCache,
    ConfigError,
    ConfigManager,
    DuplicateNodeError,
    InferenceNodeConfig,
    NodeNotFoundError,
    SeedInfo,
    StateUnavailableError,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.legacy import parse_legacy_state
from dapi_config.schedule import go_stack_order
from tests.legacy.test_migrate import GO_WRITER, HAND_EDITED, dynamic_view, plain_load, write


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host="h", inference_port=5000, poc_port=8080)


def open_mode(config: Path, mode: str) -> ConfigManager:
    return ConfigManager.open(config, env={"API_STATE_MODE": mode})


def assert_legacy_file_valid(path: Path, cm: ConfigManager) -> None:
    """The file parses with a plain loader and holds exactly cm's dynamic state."""
    doc = plain_load(path)
    state = parse_legacy_state(doc, str(path), warn=False)
    assert state.current_height == cm.get_height()
    assert [n.model_dump() for n in state.nodes or []] == [n.model_dump() for n in cm.get_nodes()]
    assert state.seeds["current"] == cm.get_current_seed()
    # The file lists the schedule as the Go stack does: highest first.
    assert (state.node_versions or []) == go_stack_order(cm.get_node_versions())
    for section in ("api", "chain_node", "nats"):
        assert section in doc


def some_writes(cm: ConfigManager, step: int) -> list[str]:
    """A few writes of every kind; returns a label per write."""
    cm.set_height(200000 + step)
    cm.add_node(node(f"m{step}"))
    cm.set_node_enabled(f"m{step}", False)
    cm.set_upcoming_seed(SeedInfo(seed=step, epoch_index=50 + step, signature=f"s{step}"))
    cm.rotate_seeds()
    cm.set_validation_params(ValidationParamsCache(timestamp_expiration=step))
    cm.set_bandwidth_params(BandwidthParamsCache(kb_per_input_token=0.5 + step))
    cm.add_node_version(300000 + step, f"v9.{step}")
    cm.set_upgrade_plan(UpgradePlan(name=f"p{step}", height=300000 + step))
    return ["height", "add", "disable", "seed", "rotate", "validation", "bandwidth", "nv", "plan"]


def test_bad_mode_is_a_clear_error(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"API_STATE_MODE.*'sqlite'"):
        open_mode(config_file, "sqlite")
    assert not (config_file.parent / "state.db").exists()


def test_dual_mirror_is_current_after_every_commit(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    mirror = tmp_path / "state.db.legacy.yaml"
    with open_mode(config, "dual") as cm:
        assert_legacy_file_valid(mirror, cm)
        assert stat.S_IMODE(mirror.stat().st_mode) == 0o600
        cm.set_height(190001)  # fires the schedule: version moves in the mirror too
        assert plain_load(mirror)["current_node_version"] == "v0.2.0"
        for label in ("add", "remove"):
            if label == "add":
                cm.add_node(node("extra"))
            else:
                cm.remove_node("node2")
            assert_legacy_file_valid(mirror, cm)
        with cm.transaction():
            cm.set_height(190002)
            cm.set_node_enabled("extra", False)
        assert_legacy_file_valid(mirror, cm)
        with pytest.raises(DuplicateNodeError):
            cm.add_node(node("extra"))
        assert_legacy_file_valid(mirror, cm)
    # The database stays the source of truth.
    with open_mode(config, "db") as cm:
        assert cm.get_height() == 190002


def test_dual_mirror_path_from_environment(tmp_path: Path, config_file: Path) -> None:
    mirror = tmp_path / "elsewhere.yaml"
    with ConfigManager.open(
        config_file, env={"API_STATE_MODE": "dual", "API_STATE_MIRROR_PATH": str(mirror)}
    ) as cm:
        cm.set_height(7)
    assert plain_load(mirror)["current_height"] == 7


def test_yaml_mode_runs_without_a_database(tmp_path: Path) -> None:
    config = write(tmp_path, HAND_EDITED)
    with open_mode(config, "yaml") as cm:
        assert cm.get_height() == 98000
        with pytest.raises(StateUnavailableError, match="yaml"):
            cm.get_audit()
        for _ in some_writes(cm, 1):
            pass
        assert_legacy_file_valid(config, cm)
        with pytest.raises(NodeNotFoundError):
            cm.remove_node("nope")
        with pytest.raises(DuplicateNodeError):
            cm.add_node(node("gpu-big"))
        # A failed transaction leaves the file as it was.
        before = config.read_bytes()
        with pytest.raises(RuntimeError), cm.transaction():
            cm.set_height(5)
            raise RuntimeError("boom")
        assert config.read_bytes() == before
        assert cm.get_height() == 200001
    assert not (tmp_path / "state.db").exists()
    # The operator's comments and unknown keys survive every write.
    text = config.read_text()
    assert '# dapi config for node "hal"' in text
    assert "# message bus" in text
    assert "telemetry:" in text


def test_yaml_mode_sees_other_processes_writes(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    env = {"API_STATE_MODE": "yaml"}
    with ConfigManager.open(config, env=env) as cm:
        assert cm.get_height() == 183467
        script = (
            "import sys; from dapi_config import ConfigManager\n"
            "cm = ConfigManager.open(sys.argv[1], env={'API_STATE_MODE': 'yaml'})\n"
            "for i in range(20):\n"
            "    cm.set_height(183468 + i)\n"
            "cm.close()\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", script, str(config)]) for _ in range(2)]
        for i in range(10):
            cm.add_node(node(f"local{i}"))
        for proc in procs:
            assert proc.wait(timeout=60) == 0
        assert cm.get_height() == 183487
        # No lost update: every node added here is still there after the other writers.
        assert {f"local{i}" for i in range(10)} <= {n.id for n in cm.get_nodes()}
        assert_legacy_file_valid(config, cm)


def test_mode_switches_lose_nothing(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    with open_mode(config, "db") as cm:
        some_writes(cm, 1)
        key = cm.create_worker_key()
        private = cm.get_ml_node_key_config().worker_private
        expected = dynamic_view(cm)
    with open_mode(config, "dual") as cm:
        assert dynamic_view(cm) == expected
        some_writes(cm, 2)
        expected = dynamic_view(cm)
        assert_legacy_file_valid(tmp_path / "state.db.legacy.yaml", cm)
    with open_mode(config, "yaml") as cm:
        assert dynamic_view(cm) == expected
        assert cm.get_ml_node_key_config().worker_public == key
        # The database sealed the private key; the old binary's file gets it decrypted.
        assert plain_load(config)["ml_node_key_config"]["worker_private"] == private
        assert_legacy_file_valid(config, cm)
        some_writes(cm, 3)
        expected = dynamic_view(cm)
    with open_mode(config, "db") as cm:
        assert cm.legacy_report is not None  # the yaml-mode file was migrated back
        assert dynamic_view(cm) == expected
        assert cm.get_ml_node_key_config().worker_public == key
        some_writes(cm, 4)
        expected = dynamic_view(cm)
    with open_mode(config, "db") as cm:
        assert dynamic_view(cm) == expected
    assert set(plain_load(config)) == {"api", "chain_node", "ml_node_key_config", "nats"}


def test_yaml_mode_worker_key_lands_in_the_key_section(tmp_path: Path, config_file: Path) -> None:
    with open_mode(config_file, "yaml") as cm:
        public = cm.create_worker_key()
        assert cm.get_ml_node_key_config().worker_public == public
    doc = plain_load(config_file)
    assert doc["ml_node_key_config"]["worker_public"] == public
    assert doc["ml_node_key_config"]["worker_private"]
    with open_mode(config_file, "yaml") as cm:
        assert cm.get_ml_node_key_config().worker_public == public
        cm.set_height(3)
    assert plain_load(config_file)["ml_node_key_config"]["worker_public"] == public


def test_yaml_mode_malformed_file_is_a_clear_error(tmp_path: Path) -> None:
    config = write(tmp_path, "api:\n  port: 8080\ncurrent_height: -1\n")
    before = config.read_bytes()
    with pytest.raises(ConfigError, match="current_height"):
        open_mode(config, "yaml")
    assert config.read_bytes() == before


def test_status_json_in_every_mode(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    for mode in ("yaml", "dual", "db"):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
        env["API_STATE_MODE"] = mode
        if mode != "yaml":  # status only looks: the file is migrated first
            subprocess.run(
                [sys.executable, "-m", "dapi_config", "--config", str(config), "migrate"],
                env=env,
                timeout=60,
                check=True,
                capture_output=True,
            )
        proc = subprocess.run(
            [sys.executable, "-m", "dapi_config", "--config", str(config), "status", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        summary: dict[str, Any] = json.loads(proc.stdout)
        assert summary["height"] == 183467
        assert summary["node_count"] == 3


def test_yaml_mode_refuses_database_only_operations(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    with open_mode(config, "yaml") as cm:
        with pytest.raises(StateUnavailableError, match="API_STATE_MODE=yaml"):
            cm.backup()
        with pytest.raises(StateUnavailableError, match="API_STATE_MODE=yaml"):
            cm.restore_backup(tmp_path / "x.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    env["API_STATE_MODE"] = "yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "dapi_config", "--config", str(config), "migrate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "API_STATE_MODE=yaml" in proc.stderr
    assert config.read_text() == GO_WRITER


def test_dual_mirror_with_writers_in_several_processes(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    mirror = tmp_path / "state.db.legacy.yaml"
    with open_mode(config, "dual"):
        pass
    script = (
        "import sys; from dapi_config import ConfigManager, InferenceNodeConfig\n"
        "cm = ConfigManager.open(sys.argv[1], env={'API_STATE_MODE': 'dual'})\n"
        "for i in range(15):\n"
        "    cm.add_node(InferenceNodeConfig(id=f'{sys.argv[2]}{i}', host='h',"
        " inference_port=1, poc_port=2))\n"
        "cm.close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(config), prefix])
        for prefix in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    with open_mode(config, "db") as cm:
        assert cm.backend.node_count() == 33
        # The last writer rendered a state that includes every commit before it.
        assert_legacy_file_valid(mirror, cm)


def test_dual_mirror_that_cannot_be_written_is_a_clear_error(
    tmp_path: Path, config_file: Path
) -> None:
    env = {"API_STATE_MODE": "dual", "API_STATE_MIRROR_PATH": str(tmp_path / "no" / "m.yaml")}
    with pytest.raises(ConfigError, match="cannot write the API_STATE_MODE=dual mirror"):
        ConfigManager.open(config_file, env=env)


def test_yaml_mode_file_becomes_0600(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER, mode=0o644)
    with open_mode(config, "yaml") as cm:
        cm.set_height(183468)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_yaml_mode_set_nodes_backs_up_the_legacy_file_first(tmp_path: Path) -> None:
    """Reproduction: yaml-mode ``set_nodes`` opened the YAML file as SQLite for its backup,
    swallowed "file is not a database" and replaced the registry with no backup at all."""
    config = write(tmp_path, GO_WRITER)
    with open_mode(config, "yaml") as cm:
        before = config.read_bytes()
        assert len(cm.get_nodes()) == 3
        cm.set_nodes([])
        assert cm.get_nodes() == []
    copies = sorted(tmp_path.glob("config.yaml.pre-set-nodes.*"))
    assert len(copies) == 1
    assert copies[0].read_bytes() == before
    assert stat.S_IMODE(copies[0].stat().st_mode) == 0o600
    assert (
        len(parse_legacy_state(plain_load(copies[0]), str(copies[0]), warn=False).nodes or []) == 3
    )
