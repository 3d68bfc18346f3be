"""`dapi-config migrate [--dry-run]` and `dapi-config rollback --out PATH` as real processes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.conftest import run_cli
from tests.legacy.test_migrate import GO_WRITER, backups, plain_load, write


def test_migrate_dry_run_then_migrate_then_noop(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    mtime = config.stat().st_mtime_ns
    dry = run_cli("--config", str(config), "migrate", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["action"] == "dry_run"
    assert report["moved"]["current_height"] == 183467
    assert config.stat().st_mtime_ns == mtime
    assert not (tmp_path / "state.db").exists()
    assert backups(config) == []

    done = run_cli("--config", str(config), "migrate")
    assert done.returncode == 0, done.stderr
    assert "moved" in done.stdout and "backup:" in done.stdout
    assert len(backups(config)) == 1

    again = run_cli("--config", str(config), "migrate", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["action"] == "none"


def test_migrate_bad_value_exits_1_with_one_line(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER.replace("current_height: 183467", "current_height: high"))
    for args in (("migrate",), ("migrate", "--dry-run"), ("status",)):
        result = run_cli("--config", str(config), *args)
        assert result.returncode == 1
        assert result.stdout == ""
        assert "current_height" in result.stderr and "'high'" in result.stderr
        assert "Traceback" not in result.stderr
    assert backups(config) == []
    assert config.read_text().count("current_height: high") == 1


def test_rollback_command(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    out = tmp_path / "legacy.yaml"
    result = run_cli("--config", str(config), "rollback", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = plain_load(out)
    assert doc["current_height"] == 183467
    assert [n["id"] for n in doc["nodes"]] == ["node1", "node2", "3"]
    assert doc["node_versions"]["versions"] == [
        {"height": 250000, "version": "2.1"},
        {"height": 190000, "version": "v0.2.0"},
    ]

    missing = run_cli("--config", str(config), "rollback")
    assert missing.returncode == 2  # usage: --out is required
    bad = run_cli("--config", str(config), "rollback", "--out", str(tmp_path / "no" / "x.yaml"))
    assert bad.returncode == 1 and "does not exist" in bad.stderr and ".tmp" not in bad.stderr


def test_bad_state_mode_in_cli(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    result = run_cli("--config", str(config), "status", env={"API_STATE_MODE": "both"})
    assert result.returncode == 1
    assert "API_STATE_MODE" in result.stderr and "'both'" in result.stderr
    assert config.read_text() == GO_WRITER


def test_new_commands_have_help() -> None:
    for args in (("migrate",), ("rollback",), ("nodes", "import")):
        result = run_cli(*args, "--help")
        assert result.returncode == 0
        assert "Example:" in result.stdout


def test_migrate_says_each_outcome_once_then_what_to_do_and_check_passes(tmp_path: Path) -> None:
    """Seen on main: the result twice (stdout and a WARNING), no hint that the worker key sits in
    clear in the file and its pre-migration copy, and `check` failing right after on "no good
    backup"."""
    config = write(
        tmp_path,
        GO_WRITER.replace('    worker_private: ""', '    worker_private: "c2VjcmV0LWtleQ=="'),
        mode=0o600,
    )
    done = run_cli("--config", str(config), "migrate")
    assert done.returncode == 0, done.stderr
    assert "moved" in done.stdout and "state backup: " in done.stdout
    assert "legacy single-file config found" not in done.stderr
    assert "dynamic keys moved to the state file" not in done.stderr
    copy = backups(config)[0]
    assert f"ml_node_key_config.worker_private in clear and so does {copy}" in done.stderr
    assert "dapi-config secrets seal" in done.stderr and "next: `dapi-config check`" in done.stderr
    checked = run_cli("--config", str(config), "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    state_backup = done.stdout.split("state backup: ", 1)[1].split()[0]
    assert "post-migration" in state_backup
    restored = run_cli("--config", str(config), "restore", state_backup)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("restored ")
    assert "restored from" not in restored.stderr and "replaced by" not in restored.stderr
    assert "next: `dapi-config check`" in restored.stderr and "to undo: dapi-config restore" in (
        restored.stderr
    )
