"""``dapi-config secrets seal``: worker_private and KeyringPassword leave the YAML file for
sealed state (the file backed up first, every comment kept); rollback writes them back.
Reproduction: after migrating a Go-written file both stayed in plain YAML."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from dapi_config import ConfigManager
from dapi_config.errors import NotSupportedError
from tests.conftest import run_cli

PRIVATE = "c2VhbGVkLXdvcmtlci1wcml2YXRlLWtleS0zMi1ieXRlcw=="
PUBLIC = "c2VhbGVkLXdvcmtlci1wdWJsaWMta2V5LTMyLWJ5dGVzLQ=="

# A static file as the migration leaves a Go-written one: the Go writer's layout, the
# operator's comments, the keyring password where the old writer persisted it.
CONFIG = f"""\
# operator: node eu-1
api:
    port: 8080
chain_node:
    KeyringPassword: correct-horse-battery
    keyring_backend: file  # keep
    url: http://node:26657
ml_node_key_config:
    worker_private: {PRIVATE}
    worker_public: {PUBLIC}
nats:
    port: 4222
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    path.chmod(0o600)
    return path


def test_seal_moves_the_secrets_and_keeps_everything_else(config: Path, tmp_path: Path) -> None:
    ConfigManager.open(config).close()
    result = run_cli("--config", str(config), "secrets", "seal", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sealed"] == ["ml_node_key_config.worker_private", "chain_node.KeyringPassword"]
    text = config.read_text()
    assert PRIVATE not in text and "correct-horse-battery" not in text
    assert "# operator: node eu-1" in text and "keyring_backend: file  # keep" in text
    assert f"worker_public: {PUBLIC}" in text and 'worker_private: ""' in text
    backup = Path(report["backup_path"])
    assert backup.read_text() == CONFIG and stat.S_IMODE(backup.stat().st_mode) == 0o600
    # Sealed in the state file (never in clear), served to the library as before.
    assert PRIVATE.encode() not in (tmp_path / "state.db").read_bytes()
    with ConfigManager.open(config) as cm:
        assert cm.get_ml_node_key_config().worker_private == PRIVATE
        assert cm.get_ml_node_key_config().worker_public == PUBLIC
        password = cm.get_chain_node_config().keyring_password
        assert password is not None and password.get_secret_value() == "correct-horse-battery"
        out = cm.write_rollback(tmp_path / "rollback.yaml")
    rolled = yaml.safe_load(out.read_text())
    assert rolled["ml_node_key_config"]["worker_private"] == PRIVATE
    assert rolled["chain_node"]["KeyringPassword"] == "correct-horse-battery"
    again = run_cli("--config", str(config), "secrets", "seal")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_environment_password_still_wins(config: Path) -> None:
    with ConfigManager.open(config) as cm:
        cm.seal_secrets()
    with ConfigManager.open(config, env={"KEYRING_PASSWORD": "from-env"}) as cm:
        password = cm.get_chain_node_config().keyring_password
        assert password is not None and password.get_secret_value() == "from-env"


def test_a_file_that_cannot_be_edited_in_place_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("ml_node_key_config: {worker_private: abc, worker_public: def}\n")
    with ConfigManager.open(path) as cm:
        with pytest.raises(Exception, match="cannot take the secrets out of the file in place"):
            cm.seal_secrets()
        assert cm.backend.secret("worker_key") is None
    assert path.read_text() == "ml_node_key_config: {worker_private: abc, worker_public: def}\n"
    assert list(tmp_path.glob("config.yaml.pre-seal.*")) == []


def test_yaml_mode_refuses(config: Path) -> None:
    with (
        ConfigManager.open(config, env={"API_STATE_MODE": "yaml"}) as cm,
        pytest.raises(NotSupportedError, match="API_STATE_MODE=yaml"),
    ):
        cm.seal_secrets()
    assert config.read_text() == CONFIG
