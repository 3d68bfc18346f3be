"""``dapi-config backup / backups / restore / check / recover`` as real subprocesses."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dapi_config import ConfigManager
from tests.conftest import run_cli


def seed_state(config_file: Path, height: int) -> Path:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(height)
        return cm.state_path


def test_backup_list_restore_round_trip(config_file: Path) -> None:
    seed_state(config_file, 10)
    made = run_cli("--config", str(config_file), "backup")
    assert made.returncode == 0, made.stderr
    path = Path(made.stdout.strip())
    assert path.is_file() and path.parent.name == "backups"
    seed_state(config_file, 20)
    listed = run_cli("--config", str(config_file), "backups", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["path"] for r in rows] == [str(path)]
    assert rows[0]["ok"] and rows[0]["schema_version"] >= 1 and rows[0]["size"] > 0
    table = run_cli("--config", str(config_file), "backups")
    assert table.returncode == 0 and "1 backup(s)" in table.stdout
    restored = run_cli("--config", str(config_file), "restore", str(path), "--json")
    assert restored.returncode == 0, restored.stderr
    result = json.loads(restored.stdout)
    assert result["pre_restore"]["reason"] == "pre-restore"
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 10


def test_backup_out_option(config_file: Path, tmp_path: Path) -> None:
    seed_state(config_file, 1)
    out = tmp_path / "mine.db"
    made = run_cli("--config", str(config_file), "backup", "--out", str(out), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["path"] == str(out) and out.is_file()


def test_restore_refuses_damaged_backup(config_file: Path, tmp_path: Path) -> None:
    seed_state(config_file, 5)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    res = run_cli("--config", str(config_file), "restore", str(bad))
    assert res.returncode == 1 and res.stdout == ""
    assert "refusing to restore a damaged backup" in res.stderr
    assert "Traceback" not in res.stderr
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 5


def test_check_exit_codes(config_file: Path) -> None:
    state = seed_state(config_file, 5)
    no_backup = run_cli("--config", str(config_file), "check")
    assert no_backup.returncode == 1 and "no good backup" in no_backup.stdout
    assert run_cli("--config", str(config_file), "backup").returncode == 0
    good = run_cli("--config", str(config_file), "check", "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["ok"] is True
    os.chmod(state, 0o640)
    loose = run_cli("--config", str(config_file), "check")
    assert loose.returncode == 1 and "chmod 600" in loose.stdout
    bad_age = run_cli("--config", str(config_file), "check", "--max-backup-age", "soon")
    assert bad_age.returncode == 1 and "--max-backup-age" in bad_age.stderr


def test_check_reports_damage_and_recover_fixes_it(config_file: Path) -> None:
    state = seed_state(config_file, 5)
    assert run_cli("--config", str(config_file), "backup").returncode == 0
    state.write_bytes(b"\x00garbage" * 2000)
    checked = run_cli("--config", str(config_file), "check")
    assert checked.returncode == 1 and "PROBLEM" in checked.stdout
    assert state.read_bytes().startswith(b"\x00garbage")  # check changed nothing
    fixed = run_cli("--config", str(config_file), "recover", "--json")
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads(fixed.stdout)
    assert report["recovered"] is True and report["restored"]["revision"] == 1
    assert "STATE FILE DAMAGED" in fixed.stderr
    again = run_cli("--config", str(config_file), "recover")
    assert again.returncode == 0 and "nothing to recover" in again.stdout


def test_recover_without_backup_explains_what_to_do(config_file: Path) -> None:
    state = seed_state(config_file, 5)
    state.write_bytes(b"garbage" * 2000)
    Path(config_file.parent / "backups").mkdir()
    (config_file.parent / "backups" / "state-20260101T000000000000Z-manual.db").write_bytes(b"x")
    res = run_cli("--config", str(config_file), "recover")
    assert res.returncode == 1 and "no good backup" in res.stderr and res.stdout == ""


def test_every_backup_command_has_help_with_example() -> None:
    for command in ("backup", "backups", "restore", "check", "recover"):
        res = run_cli(command, "--help")
        assert res.returncode == 0 and "Example:" in res.stdout, command


def test_tables_show_what_restore_needs(config_file: Path) -> None:
    """Seen on main: ``backups`` cut the path ``restore`` needs, and ``check`` printed a Python
    dict (``permissions: {'state.db': '0600'}``)."""
    base = ("--config", str(config_file))
    taken = run_cli(*base, "backup")
    assert taken.returncode == 0, taken.stderr
    path = taken.stdout.strip()
    listed = run_cli(*base, "backups")
    assert path in listed.stdout
    checked = run_cli(*base, "check")
    assert "permissions: state.db 0600" in checked.stdout
    assert "{" not in checked.stdout
    assert run_cli(*base, "restore", path).returncode == 0
