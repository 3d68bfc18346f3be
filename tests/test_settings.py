"""One Settings object: every variable read once, passed down, and each one taking effect when
the mapping handed to ``ConfigManager.open(env=...)`` differs from the process environment."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dapi_config import ConfigError, ConfigManager, InferenceNodeConfig
from dapi_config.errors import MasterKeyError
from dapi_config.export import ExportSettings
from dapi_config.settings import AuditRetention, Settings
from tests.conftest import EXAMPLE_CONFIG, run_cli

SRC = Path(__file__).resolve().parents[1] / "src" / "dapi_config"


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host="10.0.0.9", inference_port=5000, poc_port=8080)


def test_nothing_below_the_entry_points_reads_the_process_environment() -> None:
    readers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "os.environ" in path.read_text() or "getenv(" in path.read_text()
    )
    assert readers == ["settings.py"]


def test_every_variable_of_the_env_mapping_takes_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process environment says one thing for every variable; the mapping another. Only
    the mapping may count."""
    home = tmp_path / "mapping"
    home.mkdir()
    config = home / "chosen.yaml"
    config.write_text(EXAMPLE_CONFIG)
    config.chmod(0o600)
    nodes_file = home / "nodes.json"
    nodes_file.write_text(json.dumps([node("from-file").model_dump(mode="json")]))
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    for name, value in {
        "API_CONFIG_PATH": str(decoy / "config.yaml"),
        "API_STATE_DB_PATH": str(decoy / "state.db"),
        "API_STATE_MODE": "yaml",
        "API_STATE_MIRROR_PATH": str(decoy / "mirror.yaml"),
        "API_STATE_KEY": "x",  # too short: would stop the open
        "API_STATE_ENCRYPTION": "bogus",
        "API_AUDIT_KEEP": "never",
        "API_BACKUP_INTERVAL": "soon",
        "API_BACKUP_KEEP": "some",
        "CONFIG_EXPORT_INTERVAL": "often",
        "CONFIG_EXPORT_KEEP": "lots",
        "CONFIG_EXPORT_SECRETS": "maybe",
        "NODE_CONFIG_PATH": str(decoy / "missing.json"),
        "DAPI_API__PORT": "1111",
        "KEY_NAME": "process-key",
    }.items():
        monkeypatch.setenv(name, value)
    env = {
        "API_CONFIG_PATH": str(config),
        "API_STATE_DB_PATH": str(home / "chosen.db"),
        "API_STATE_MODE": "dual",
        "API_STATE_MIRROR_PATH": str(home / "mirror.yaml"),
        "API_STATE_KEY": "a mapping secret of enough length",
        "API_STATE_ENCRYPTION": "",
        "API_AUDIT_KEEP": "7",
        "API_BACKUP_INTERVAL": "2h",
        "API_BACKUP_KEEP": "3",
        "CONFIG_EXPORT_INTERVAL": "45s",
        "CONFIG_EXPORT_KEEP": "2",
        "CONFIG_EXPORT_SECRETS": "true",
        "NODE_CONFIG_PATH": str(nodes_file),
        "DAPI_API__PORT": "2222",
        "KEY_NAME": "mapping-key",
    }
    with ConfigManager.open(env=env) as cm:
        assert cm.config_path == config
        assert cm.state_path == home / "chosen.db" and cm.state_path.exists()
        assert cm.state_mode == "dual" and (home / "mirror.yaml").exists()
        assert cm.check_master_key().startswith("API_STATE_KEY")
        assert cm.settings.audit_retention == AuditRetention(rows=7)
        assert cm.backend.audit_retention == AuditRetention(rows=7)
        assert (cm.settings.backup_interval, cm.settings.backup_keep) == (7200.0, 3)
        assert ExportSettings.from_settings(cm.settings) == ExportSettings(45.0, 2, True)
        assert [n.id for n in cm.get_nodes()] == ["from-file"]
        assert cm.get_api_config().port == 2222
        assert cm.get_chain_node_config().signer_key_name == "mapping-key"
        # The backup retention reaches the automatic backups too.
        for i in range(5):
            cm.add_node(node(f"n{i}"))
            cm.set_nodes(cm.get_nodes())
        assert len([b for b in cm.list_backups() if b.reason == "pre-set-nodes"]) == 3
        exporter = cm.start_periodic_export()
        assert exporter.settings == ExportSettings(45.0, 2, True)
    assert not (decoy / "state.db").exists() and not (decoy / "mirror.yaml").exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_BACKUP_KEEP", "-1"),
        ("API_BACKUP_KEEP", "lots"),
        ("API_BACKUP_INTERVAL", "0"),
        ("CONFIG_EXPORT_KEEP", "1.5"),
        ("API_STATE_MODE", "sqlite"),
        ("API_STATE_ENCRYPTION", "aes"),
    ],
)
def test_a_bad_value_stops_the_open_naming_the_variable(
    config_file: Path, name: str, value: str
) -> None:
    """Reproduction: a bad API_BACKUP_KEEP used to be ignored silently at the first backup."""
    with pytest.raises(ConfigError, match=name):
        ConfigManager.open(config_file, env={name: value})
    assert not (config_file.parent / "state.db").exists()


def test_a_short_state_key_is_a_master_key_error() -> None:
    with pytest.raises(MasterKeyError, match="API_STATE_KEY is too short"):
        Settings.from_env({"API_STATE_KEY": "short"})


def test_bad_backup_keep_stops_serve_with_one_line(config_file: Path) -> None:
    started = time.monotonic()
    result = run_cli("--config", str(config_file), "serve", env={"API_BACKUP_KEEP": "-3"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: API_BACKUP_KEEP: expected a whole number >= 0, got '-3'"
    )
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60


def test_settings_repr_hides_the_key() -> None:
    settings = Settings.from_env({"API_STATE_KEY": "a very secret state key"})
    assert "very secret" not in repr(settings)
    assert settings.named_secret("API_STATE_KEY") == "a very secret state key"
    assert Settings.from_env({}).named_secret("API_STATE_NEW_KEY") == ""


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_BACKUP_KEEP", "5")
    assert Settings.from_env().backup_keep == 5
    assert Settings.from_env({}).backup_keep == 24
    assert os.environ["API_BACKUP_KEEP"] == "5"
