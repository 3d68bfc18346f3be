"""Integrity check at open and automatic recovery from the newest good backup."""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
from pathlib import Path

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.errors import StateCorruptError, StateUnavailableError
from dapi_config.store import recovery
from dapi_config.store.backup import backup_dir_for
from dapi_config.store.sqlite import restore_state_file


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(
        id=node_id, host="10.0.0.1", inference_port=5000, poc_port=8080, max_concurrent=4
    )


def populated(config_file: Path, nodes: int = 200) -> tuple[Path, int]:
    """A closed state file with data and one good backup; returns (state path, backup rev)."""
    with ConfigManager.open(config_file) as cm:
        cm.set_height(1000)
        with cm.transaction():
            for i in range(nodes):
                cm.add_node(node(f"n{i}"))
        backup = cm.backup()
        cm.set_height(2000)  # after the backup: lost by a recovery
        return cm.state_path, backup.revision


def quarantined(state: Path) -> list[Path]:
    folder = state.parent / recovery.QUARANTINE_DIR_NAME
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_recovered(config_file: Path, state: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="dapi_config.recovery")
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 1000  # the backup's state; 2000 came later and is lost
        assert len(cm.get_nodes()) == 200
        cm.set_height(1001)
        assert cm.check().items["integrity"] == "ok"
    loud = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(loud) == 1
    text = loud[0].getMessage()
    assert "STATE FILE DAMAGED" in text and "LOST" in text and "revision 201" in text
    kept = quarantined(state)
    assert any(p.name == state.name for p in kept)  # the bad file is kept, never deleted


def corrupt_garbage(state: Path) -> None:
    state.write_bytes(os.urandom(state.stat().st_size))


def corrupt_header(state: Path) -> None:
    data = bytearray(state.read_bytes())
    data[0:16] = b"Not SQLite here!"
    state.write_bytes(bytes(data))


def corrupt_zero_pages(state: Path) -> None:
    data = bytearray(state.read_bytes())
    for page in range(2, len(data) // 4096, 3):
        data[page * 4096 : (page + 1) * 4096] = bytes(4096)
    state.write_bytes(bytes(data))


def corrupt_zero_page_one(state: Path) -> None:
    data = bytearray(state.read_bytes())
    data[0:4096] = bytes(4096)
    state.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [corrupt_garbage, corrupt_header, corrupt_zero_pages, corrupt_zero_page_one]
)
def test_damaged_file_is_quarantined_and_newest_backup_restored(
    config_file: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    state, _ = populated(config_file)
    damage(state)  # type: ignore[operator]
    assert_recovered(config_file, state, caplog)


@pytest.mark.parametrize("keep", ["zero", 50, 4096, "half", "minus-page"])
def test_truncated_file_is_recovered(
    config_file: Path, caplog: pytest.LogCaptureFixture, keep: object
) -> None:
    state, _ = populated(config_file)
    size = state.stat().st_size
    length = {"zero": 0, "half": size // 2, "minus-page": size - 4096}.get(str(keep), keep)
    assert isinstance(length, int)
    os.truncate(state, length)
    assert_recovered(config_file, state, caplog)


def test_stale_wal_is_moved_aside_with_the_damaged_file(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, _ = populated(config_file)
    # A -wal and -shm beside a damaged main file must leave with it.
    Path(f"{state}-wal").write_bytes(os.urandom(5000))
    Path(f"{state}-shm").write_bytes(bytes(32768))
    corrupt_garbage(state)
    assert_recovered(config_file, state, caplog)
    names = {p.name for p in quarantined(state)}
    assert {state.name, f"{state.name}-wal", f"{state.name}-shm"} <= names


def test_no_good_backup_stops_with_instructions_and_changes_nothing(config_file: Path) -> None:
    state, _ = populated(config_file)
    for b in backup_dir_for(state).iterdir():
        b.write_bytes(b"junk")
    corrupt_garbage(state)
    before = state.read_bytes()
    with pytest.raises(StateCorruptError) as err:
        ConfigManager.open(config_file)
    message = str(err.value)
    assert "no good backup" in message and "move the file" in message and "restore" in message
    assert state.read_bytes() == before and quarantined(state) == []


def test_empty_file_without_backups_is_a_fresh_start(config_file: Path) -> None:
    state = config_file.parent / "state.db"
    state.touch()
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 0
        cm.set_height(1)
    assert quarantined(state) == []


def _hot_journal_over_unwritten_pages(state: Path, pages_before: int) -> None:
    """What a power cut leaves while SQLite grows the file in rollback-journal mode (seen by
    the power-loss campaign: a torn cut while the first open created the state): the file is
    longer but its new page never reached the disk (zeros), and the synced journal header says
    the file held ``pages_before`` pages."""
    header = struct.pack(">8sIIIII", bytes.fromhex("d9d505f920a163d7"), 0, 0x1C843F0E,
                         pages_before, 512, 4096)  # fmt: skip
    Path(f"{state}-journal").write_bytes(header.ljust(512, b"\0"))
    with state.open("ab") as handle:
        handle.write(b"\0" * 4096)


def test_a_hot_journal_is_rolled_back_before_the_file_is_judged(
    config_file: Path, tmp_path: Path
) -> None:
    """Reproduction: the open-time check read the zeroed header, called the file damaged, and
    (with no backup) refused to start; SQLite's own rollback of the journal restores it."""
    state = tmp_path / "state.db"
    _hot_journal_over_unwritten_pages(state, pages_before=0)
    with ConfigManager.open(config_file) as cm:
        cm.set_height(5)
        assert cm.get_height() == 5
    assert quarantined(state) == []


def test_foreign_sqlite_file_is_refused_not_replaced(config_file: Path) -> None:
    state, _ = populated(config_file)
    state.unlink()
    conn = sqlite3.connect(state)
    conn.execute("CREATE TABLE other(x)")
    conn.commit()
    conn.close()
    with pytest.raises(StateCorruptError, match="not a dapi-config state file"):
        ConfigManager.open(config_file)
    assert quarantined(state) == []


def test_missing_main_file_with_leftover_wal_is_damage(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, _ = populated(config_file)
    wal = Path(f"{state}-wal")
    wal.write_bytes(os.urandom(4096))
    os.replace(state, state.parent / "gone.db")
    caplog.set_level(logging.CRITICAL)
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 1000
    assert any(p.name == wal.name for p in quarantined(state))


def test_interrupted_swap_is_finished_at_next_open(config_file: Path) -> None:
    state, _ = populated(config_file)
    good = recovery.newest_good_backup(backup_dir_for(state), state)
    assert good is not None
    recovery._stage_copy(good, state)  # as if killed right after staging
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 1000
    assert not recovery.staged_path(state).exists()
    assert any(p.name == state.name for p in quarantined(state))


def test_check_reports_problems_and_passes_when_healthy(config_file: Path) -> None:
    state, _ = populated(config_file)
    ok = recovery.check_state(state, max_backup_age=3600)
    assert ok.ok, ok.problems
    assert ok.items["integrity"] == "ok" and ok.items["schema_version"] >= 1
    stale = recovery.check_state(state, max_backup_age=0.000001)
    assert not stale.ok and "old" in stale.problems[0]
    os.chmod(state, 0o644)
    loose = recovery.check_state(state)
    assert any("chmod 600" in p for p in loose.problems)
    os.chmod(state, 0o600)
    backup = recovery.newest_good_backup(backup_dir_for(state), state)
    assert backup is not None
    os.chmod(backup.path, 0o644)
    assert any(str(backup.path) in p for p in recovery.check_state(state).problems)
    os.chmod(backup.path, 0o600)
    corrupt_garbage(state)
    bad = recovery.check_state(state)
    assert not bad.ok and "header" in bad.items["integrity"]
    assert quarantined(state) == []  # check never repairs


def test_restore_over_damaged_live_file_swaps_it_out(config_file: Path) -> None:
    state, _ = populated(config_file)
    good = recovery.newest_good_backup(backup_dir_for(state), state)
    assert good is not None
    corrupt_zero_pages(state)
    result = restore_state_file(state, good.path)
    assert result.pre_restore is None and result.quarantine is not None
    with ConfigManager.open(
        config_file,
    ) as cm:
        assert cm.get_height() == 1000


# --- recovery never replaces a file another process has open (hardening) --------------------


def test_recovery_refuses_while_another_process_has_the_file_open(config_file: Path) -> None:
    """Seen on main: with the server up and its state file replaced by a damaged one, a CLI
    command run at that moment restored a backup under the running server."""
    from tests.conftest import run_cli

    holder = ConfigManager.open(config_file)  # this test process: "the running server"
    try:
        holder.add_node(InferenceNodeConfig(id="n1", host="h", inference_port=1, poc_port=2))
        holder.backup()
        state = holder.state_path
        garbage = state.with_name("garbage.db")
        garbage.write_bytes(b"not a database " * 1000)
        os.replace(garbage, state)  # a new inode: the holder keeps the old one open
        damaged = state.read_bytes()
        node = '{"id": "n2", "host": "h", "inference_port": 1, "poc_port": 2}'
        for command in (
            ("nodes", "add", "-"),
            ("recover",),
            ("restore", str(holder.list_backups()[0].path)),
        ):
            result = run_cli("--config", str(config_file), *command, input=node)
            assert result.returncode == 1, (command, result.stdout)
            assert "another process has it open" in result.stderr, result.stderr
        assert state.read_bytes() == damaged  # nothing replaced, nothing quarantined
        assert not (state.parent / recovery.QUARANTINE_DIR_NAME).exists()
        with pytest.raises(StateUnavailableError, match="another process has it open"):
            ConfigManager.open(config_file)  # in-process too
    finally:
        holder.close()
    result = run_cli("--config", str(config_file), "recover")  # once it is closed: recovered
    assert result.returncode == 0, result.stderr
    with ConfigManager.open(config_file) as cm:
        assert [n.id for n in cm.get_nodes()] == ["n1"]
