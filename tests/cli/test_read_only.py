"""Commands that only look (status, nodes list, export, audit) never migrate, never create a
state file and never rewrite the config. Reproduction: ``status --json`` rewrote a legacy
``config.yaml`` (it migrated), and a mistyped ``--state`` created an empty state that then
reported height 0."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dapi_config import ConfigError, ConfigManager, StateUnavailableError
from tests.conftest import run_cli
from tests.legacy.test_migrate import GO_WRITER, write

LOOKING = (
    ("status", "--json"),
    ("nodes", "list", "--json"),
    ("export", "--out", "-"),
    ("audit", "--json"),
)


def digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.mark.parametrize("command", LOOKING, ids=" ".join)
def test_unmigrated_legacy_file_is_described_not_migrated(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = write(tmp_path, GO_WRITER)
    before = digest(tmp_path)
    result = run_cli("--config", str(config), *command)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "not migrated yet" in result.stderr and "3 node(s)" in result.stderr
    assert "dapi-config migrate" in result.stderr and "Traceback" not in result.stderr
    assert digest(tmp_path) == before  # no state file, no backup, the config untouched


@pytest.mark.parametrize("command", LOOKING, ids=" ".join)
def test_missing_state_file_is_said_and_not_created(
    config_file: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(5)
    typo = tmp_path / "stat.db"
    result = run_cli("--config", str(config_file), "--state", str(typo), *command)
    assert result.returncode == 1
    assert "no state file here (nothing was created)" in result.stderr
    assert not typo.exists() and not Path(f"{typo}-wal").exists()
    good = run_cli("--config", str(config_file), "status", "--json")
    assert good.returncode == 0 and json.loads(good.stdout)["height"] == 5


def test_status_on_a_migrated_state_with_reappearing_keys_changes_nothing(
    tmp_path: Path,
) -> None:
    config = write(tmp_path, GO_WRITER)
    with ConfigManager.open(config):
        pass
    config.write_text(config.read_text() + "current_height: 7\n")
    before = digest(tmp_path)
    result = run_cli("--config", str(config), "status", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["height"] == 183467
    assert "not migrated" in result.stderr
    assert digest(tmp_path) == before


def test_library_read_only_open(config_file: Path, tmp_path: Path) -> None:
    with pytest.raises(StateUnavailableError, match="nothing was created"):
        ConfigManager.open(config_file, read_only=True)
    assert not (config_file.parent / "state.db").exists()
    legacy = write(
        tmp_path / "legacy" if (tmp_path / "legacy").mkdir() is None else tmp_path, GO_WRITER
    )
    with pytest.raises(ConfigError, match="not migrated yet"):
        ConfigManager.open(legacy, read_only=True)


def test_check_validates_the_config_file_too(config_file: Path) -> None:
    ConfigManager.open(config_file).close()
    good = run_cli("--config", str(config_file), "check", "--json")
    assert json.loads(good.stdout)["config"] == "ok"
    config_file.write_text(config_file.read_text().replace("port: 4222", "port: 99999"))
    bad = run_cli("--config", str(config_file), "check", "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["config"] == "invalid" and "nats.port" in report["problems"][0]
