"""``--out`` never destroys the product's own files (hardening). Each case was seen on main:
``export --out state.db`` replaced the live database with YAML, ``backup --out state.db.key``
destroyed the master key, ``backup --out config.yaml`` replaced the config, an existing file
was overwritten silently, and ``backup --out /missing/dir/`` wrote a file named ``dir``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapi_config import ConfigManager
from tests.conftest import run_cli

NODE = '{"id": "n1", "host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080}'


@pytest.fixture
def populated(config_file: Path) -> Path:
    """A config whose state holds a node, a sealed secret (so a key file) and a backup."""
    base = ("--config", str(config_file))
    assert run_cli(*base, "nodes", "add", "-", input=NODE).returncode == 0
    assert run_cli(*base, "keys", "create", "n1").returncode == 0
    assert run_cli(*base, "backup").returncode == 0
    return config_file


def own_files(config: Path) -> dict[Path, bytes]:
    folder = config.parent
    files = [config, folder / "state.db", folder / "state.db.key", *folder.glob("backups/*.db")]
    return {f: f.read_bytes() for f in files if f.exists()}


@pytest.mark.parametrize("command", ["export", "backup", "rollback"])
def test_out_refuses_every_own_file(populated: Path, command: str) -> None:
    before = own_files(populated)
    assert len(before) >= 4, before.keys()
    for target in before:
        for force in ((), ("--force",)):
            result = run_cli("--config", str(populated), command, "--out", str(target), *force)
            assert result.returncode == 1, (command, target, result.stdout)
            assert "refusing to write over" in result.stderr and "Traceback" not in result.stderr
    assert own_files(populated) == before
    with ConfigManager.open(populated) as cm:
        assert [n.id for n in cm.get_nodes()] == ["n1"]
        assert cm.get_security_key_info("n1").key_version == 1


@pytest.mark.parametrize("command", ["export", "backup", "rollback"])
def test_an_existing_file_needs_force(populated: Path, tmp_path: Path, command: str) -> None:
    target = tmp_path / "elsewhere" / "out.file"
    target.parent.mkdir()
    target.write_text("precious")
    base = ("--config", str(populated), command, "--out", str(target))
    refused = run_cli(*base)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert target.read_text() == "precious"
    forced = run_cli(*base, "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_bytes() != b"precious"


@pytest.mark.parametrize("command", ["export", "backup", "rollback"])
def test_a_trailing_slash_is_a_directory(populated: Path, tmp_path: Path, command: str) -> None:
    folder = tmp_path / "missing" / "dir"
    result = run_cli("--config", str(populated), command, "--out", f"{folder}/")
    assert result.returncode == 0, result.stderr
    assert folder.is_dir()
    written = Path(result.stdout.strip().splitlines()[-1])
    assert written.parent == folder and written.is_file()


def test_backup_json_names_the_file_in_the_directory(populated: Path, tmp_path: Path) -> None:
    result = run_cli("--config", str(populated), "backup", "--out", f"{tmp_path}/b/", "--json")
    assert result.returncode == 0, result.stderr
    assert Path(json.loads(result.stdout)["path"]).parent == tmp_path / "b"


def test_a_missing_directory_is_named_not_a_temp_file(populated: Path, tmp_path: Path) -> None:
    """Seen on main: ``export --out /missing/x.yaml`` named an internal temp file."""
    result = run_cli("--config", str(populated), "export", "--out", str(tmp_path / "no" / "x.yaml"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr and ".tmp" not in result.stderr


def test_keys_check_before_any_secret_says_so(config_file: Path) -> None:
    """Seen on main: ``keys check`` vouched for a key file that did not exist yet."""
    assert run_cli("--config", str(config_file), "nodes", "add", "-", input=NODE).returncode == 0
    result = run_cli("--config", str(config_file), "keys", "check")
    assert result.returncode == 0
    assert "no secret is stored yet" in result.stdout
    assert not (config_file.parent / "state.db.key").exists()
