"""Deterministic crash points (``DAPI_CONFIG_FAILPOINT``): after each, the next start recovers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config._failpoints import ENV_VAR
from dapi_config.store.backup import backup_dir_for, inspect_backup, list_backups
from dapi_config.store.migrations import LATEST_VERSION
from dapi_config.store.recovery import QUARANTINE_DIR_NAME, diagnose, staged_path
from tests.faults.campaign import ROOT, integrity_ok


def run_child(*args: str, failpoint: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    if failpoint:
        env[ENV_VAR] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "tests.faults._actions", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def killed(res: subprocess.CompletedProcess[str]) -> bool:
    return res.returncode == -signal.SIGKILL and "done" not in res.stdout


def node(i: int) -> InferenceNodeConfig:
    return InferenceNodeConfig(
        id=f"n{i}", host="10.0.0.1", inference_port=5000, poc_port=8080, hardware=[]
    )


def with_data(config_file: Path, nodes: int = 300) -> Path:
    """A state file large enough that a restore takes several steps, plus one backup."""
    with ConfigManager.open(config_file) as cm:
        cm.set_height(1000)
        with cm.transaction():
            for i in range(nodes):
                cm.add_node(node(i))
        cm.backup()
        cm.set_height(2000)
        return cm.state_path


def test_failpoints_are_off_unless_armed(config_file: Path) -> None:
    res = run_child("set-height", str(config_file), "5", failpoint=None)
    assert res.returncode == 0 and "done" in res.stdout, res.stderr


def test_killed_after_commit_before_ack_keeps_the_commit(config_file: Path) -> None:
    # The first commits of a new file are its schema steps, one per start here: killed right
    # after each, the next start finds a sound file and applies the next step.
    for _ in range(LATEST_VERSION):
        step = run_child("open", str(config_file), failpoint="commit.before_ack")
        assert killed(step)
    res = run_child("set-height", str(config_file), "77", failpoint="commit.before_ack")
    assert killed(res)
    state = config_file.parent / "state.db"
    integrity_ok(state)
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 77


@pytest.mark.parametrize("point", ["backup.mid_copy", "backup.before_rename"])
def test_killed_mid_backup_leaves_no_backup_and_intact_state(config_file: Path, point: str) -> None:
    state = with_data(config_file)
    before = {b.path for b in list_backups(backup_dir_for(state), state)}
    res = run_child("backup", str(config_file), failpoint=point)
    assert killed(res)
    after = list_backups(backup_dir_for(state), state)
    assert {b.path for b in after} == before  # no half-made backup under a real name
    assert all(b.ok for b in after)
    integrity_ok(state)
    assert diagnose(state, backup_dir_for(state)) is None
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 2000 and len(cm.get_nodes()) == 300
        assert inspect_backup(cm.backup().path).ok  # and backups work again


def test_killed_mid_restore_leaves_the_old_state_whole(config_file: Path) -> None:
    state = with_data(config_file)
    target = list_backups(backup_dir_for(state), state)[0]
    with ConfigManager.open(config_file) as cm, cm.transaction():
        for i in range(300, 600):
            cm.add_node(node(i))  # so the live file differs in many pages
    res = run_child("restore", str(config_file), str(target.path), failpoint="restore.mid_copy")
    assert killed(res), res.stderr
    integrity_ok(state)
    assert diagnose(state, backup_dir_for(state)) is None
    with ConfigManager.open(config_file) as cm:
        # The restore is one transaction: killed before its commit, nothing of it is visible.
        assert cm.get_height() == 2000 and len(cm.get_nodes()) == 600
        reasons = [b.reason for b in cm.list_backups()]
        assert "pre-restore" in reasons  # the safety copy was taken before the copy began
        cm.restore_backup(target.path)  # and a restore now completes
        assert cm.get_height() == 1000 and len(cm.get_nodes()) == 300


@pytest.mark.parametrize("point", ["recover.mid_quarantine", "recover.before_swap"])
def test_killed_mid_recovery_is_finished_by_the_next_start(
    config_file: Path, point: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = with_data(config_file)
    Path(f"{state}-wal").write_bytes(os.urandom(8192))
    Path(f"{state}-shm").write_bytes(bytes(32768))
    state.write_bytes(os.urandom(state.stat().st_size))
    res = run_child("open", str(config_file), failpoint=point)
    assert killed(res), res.stderr
    caplog.set_level(logging.WARNING)
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 1000 and len(cm.get_nodes()) == 300
        cm.set_height(1001)
    assert not staged_path(state).exists()
    kept = sorted(p.name for p in (state.parent / QUARANTINE_DIR_NAME).rglob("*") if p.is_file())
    # Every damaged file is kept aside, wherever the crash split them.
    assert {state.name, f"{state.name}-wal", f"{state.name}-shm"} <= set(kept)
    integrity_ok(state)


def test_killed_mid_legacy_migration_is_finished_without_double_import(tmp_path: Path) -> None:
    from dapi_config.legacy import LEGACY_KIND
    from tests.legacy.test_migrate import GO_WRITER, dynamic_view, write

    config = write(tmp_path, GO_WRITER)
    res = run_child("open", str(config), failpoint="legacy.mid_migration")
    assert killed(res), res.stderr
    assert "current_height" in config.read_text()  # the rewrite had not happened yet
    with ConfigManager.open(config) as cm:
        view = dynamic_view(cm)
        imports = [
            e
            for e in cm.backend.audit_entries(limit=10_000)
            if e.action == "import" and e.target == LEGACY_KIND
        ]
    assert "current_height" not in config.read_text()  # finished by the next start
    assert len(imports) == 1  # imported once, not twice
    assert view["height"] > 0
    integrity_ok(config.parent / "state.db")
