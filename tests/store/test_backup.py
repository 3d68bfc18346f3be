"""Online backups: verified copies, 0600, listing, retention, restore, scheduler.

On both backends: a PostgreSQL state is backed up to the same SQLite snapshot files (SPEC §13).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig, SeedInfo
from dapi_config.errors import BackupError, ConfigError
from dapi_config.settings import Settings, parse_count, parse_duration
from dapi_config.store import backup as bk

pytestmark = pytest.mark.both_backends


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(
        id=node_id, host="10.0.0.1", inference_port=5000, poc_port=8080, max_concurrent=4
    )


def test_backup_is_verified_private_and_self_contained(manager: ConfigManager) -> None:
    manager.set_height(42)
    manager.add_node(node("a"))
    info = manager.backup()
    assert info.ok and info.path.parent == manager.backup_dir
    assert info.revision == 2 and info.schema_version >= 1 and info.reason == "manual"
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(manager.backup_dir.stat().st_mode) == 0o700
    # One file: rollback-journal mode, no -wal/-shm companions, no temp files left.
    assert sorted(p.name for p in manager.backup_dir.iterdir()) == [info.path.name]
    assert info.path.read_bytes()[18:20] == b"\x01\x01"
    conn = sqlite3.connect(info.path)
    try:
        assert conn.execute("SELECT value FROM chain_state WHERE key='current_height'").fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_backup_to_out_file_and_directory(manager: ConfigManager, tmp_path: Path) -> None:
    manager.set_height(1)
    target = tmp_path / "elsewhere" / "copy.db"
    target.parent.mkdir()
    assert manager.backup(target).path == target
    again = manager.backup(target)  # replaced atomically
    assert again.path == target and bk.inspect_backup(target).ok
    in_dir = manager.backup(tmp_path / "elsewhere")
    assert in_dir.path.parent == tmp_path / "elsewhere" and in_dir.path.name.endswith("-manual.db")


def test_backup_of_missing_state_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no state file"):
        bk.create_backup(tmp_path / "absent.db")
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").iterdir())


def test_bad_reason_is_refused(manager: ConfigManager) -> None:
    with pytest.raises(BackupError, match="reason"):
        manager.backup(reason="../../etc")
    assert manager.list_backups() == []


def test_backup_into_unwritable_place_fails_cleanly(manager: ConfigManager, tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="does not exist"):
        manager.backup(blocker / "x.db")  # its directory is a file: named, nothing written
    assert blocker.read_text() == "x" and manager.list_backups() == []


def test_inspect_reports_damage_without_raising(tmp_path: Path, manager: ConfigManager) -> None:
    manager.set_height(3)
    info = manager.backup()
    data = bytearray(info.path.read_bytes())
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    assert "header" in (bk.inspect_backup(garbage).problem or "")
    short = tmp_path / "short.db"
    short.write_bytes(bytes(data[:4096]))
    assert not bk.inspect_backup(short).ok
    zeroed = tmp_path / "zeroed.db"
    data[4096:8192] = bytes(4096)
    zeroed.write_bytes(bytes(data))
    assert not bk.inspect_backup(zeroed).ok
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    assert "application_id" in (bk.inspect_backup(foreign).problem or "")
    with pytest.raises(BackupError, match="cannot read"):
        bk.inspect_backup(tmp_path / "missing.db")


def test_list_newest_first_with_age_size_schema(manager: ConfigManager) -> None:
    manager.set_height(1)
    first = manager.backup()
    manager.set_height(2)
    second = manager.backup(reason="scheduled")
    listed = manager.list_backups()
    assert [b.path for b in listed] == [second.path, first.path]
    for b in listed:
        d = b.to_dict()
        assert d["ok"] and d["size"] > 0 and d["schema_version"] >= 1 and d["age_seconds"] >= 0
    assert [b.revision for b in listed] == [2, 1]


def test_retention_keeps_newest_per_reason_and_never_manual(manager: ConfigManager) -> None:
    manager.set_height(1)
    manual = manager.backup()
    scheduled = [manager.backup(reason="scheduled") for _ in range(5)]
    pre = [manager.backup(reason="pre-restore") for _ in range(3)]
    removed = bk.prune_backups(manager.backup_dir, None, 2)
    assert set(removed) == {b.path for b in scheduled[:3]} | {pre[0].path}
    left = {b.path for b in manager.list_backups()}
    assert left == {manual.path, *(b.path for b in scheduled[3:]), *(b.path for b in pre[1:])}
    assert bk.prune_backups(manager.backup_dir, None, 0) == []


def test_restore_brings_back_state_and_backs_up_current_first(manager: ConfigManager) -> None:
    manager.set_height(100)
    manager.add_node(node("keep"))
    manager.set_current_seed(SeedInfo(seed=7, epoch_index=1, signature="s"))
    good = manager.backup()
    manager.set_height(200)
    manager.remove_node("keep")
    manager.add_node(node("later"))
    result = manager.restore_backup(good.path)
    assert result.pre_restore is not None and result.quarantine is None
    assert manager.get_height() == 100  # the hot cache follows
    assert [n.id for n in manager.get_nodes()] == ["keep"]
    assert manager.get_current_seed().seed == 7
    # The pre-restore backup holds the state just before the restore.
    assert result.pre_restore.revision == 6
    manager.restore_backup(result.pre_restore.path)
    assert manager.get_height() == 200
    assert [n.id for n in manager.get_nodes()] == ["later"]
    manager.set_height(201)  # writes work after a restore
    assert manager.get_height() == 201


def test_restore_is_seen_by_another_open_manager(
    manager: ConfigManager, state_env: dict[str, str]
) -> None:
    manager.set_height(10)
    good = manager.backup()
    manager.set_height(11)
    manager.add_node(node("later"))
    other = ConfigManager.open(manager.config_path, env=state_env)
    try:
        assert other.get_height() == 11
        manager.restore_backup(good.path)
        assert other.get_nodes() == []  # a fresh read
        # The other replica's hot read follows within the documented bound (SPEC §13).
        for _ in range(200):
            if other.get_height() == 10:
                break
            threading.Event().wait(0.01)
        assert other.get_height() == 10
        assert manager.get_height() == 10
    finally:
        other.close()


def test_restore_refuses_damaged_backup_and_changes_nothing(
    manager: ConfigManager, tmp_path: Path
) -> None:
    manager.set_height(5)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\0" * 8192)
    before = manager.list_backups()
    with pytest.raises(BackupError, match="refusing to restore a damaged backup"):
        manager.restore_backup(bad)
    with pytest.raises(BackupError, match="cannot read"):
        manager.restore_backup(tmp_path / "nope.db")
    assert manager.get_height() == 5
    assert manager.list_backups() == before  # not even a pre-restore backup


def test_bulk_replace_takes_a_backup_first(manager: ConfigManager) -> None:
    manager.set_nodes([node("a")])  # nothing stored yet before this: no backup needed
    assert manager.list_backups() == []
    manager.set_nodes([node("b"), node("c")])
    backups = manager.list_backups()
    assert len(backups) == 1 and backups[0].reason == "pre-set-nodes"
    manager.restore_backup(backups[0].path)
    assert [n.id for n in manager.get_nodes()] == ["a"]


def test_backups_while_four_threads_write_are_consistent(
    manager: ConfigManager, tmp_path: Path
) -> None:
    """Every backup taken under load passes its check and restores to a state in which each
    writer's batches form an unbroken prefix (atomic batches, no torn copy)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        k = 0
        try:
            while not stop.is_set():
                with manager.transaction():
                    manager.add_node(node(f"t{t}-{k}"))
                    manager.add_node_version(1_000_000 + t * 100_000 + k, f"v{t}.{k}")
                k += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    taken = []
    try:
        for _ in range(6):
            taken.append(manager.backup())
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert not errors
    for info in taken:
        assert bk.inspect_backup(info.path).ok
        state = tmp_path / f"restored-{info.path.stem}" / "state.db"
        state.parent.mkdir()
        from dapi_config.store.sqlite import restore_state_file

        restore_state_file(state, info.path)
        conn = sqlite3.connect(state)
        try:
            ids = {r[0] for r in conn.execute("SELECT id FROM inference_nodes")}
            versions = {r[0] for r in conn.execute("SELECT version FROM node_versions")}
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        for t in range(4):
            ks = sorted(int(i.split("-")[1]) for i in ids if i.startswith(f"t{t}-"))
            assert ks == list(range(len(ks)))
            assert {f"v{t}.{k}" for k in ks} == {v for v in versions if v.startswith(f"v{t}.")}


def test_interval_and_keep_parsing() -> None:
    def interval(text: str) -> float:
        return parse_duration(text, "API_BACKUP_INTERVAL")

    def keep(text: str) -> int:
        return parse_count(text, "API_BACKUP_KEEP")

    assert interval("3600") == 3600
    assert interval("30m") == 1800
    assert interval("1h") == 3600
    assert interval("2d") == 172800
    for bad in ("", "0", "-5", "abc", "1x", "nan", "inf"):
        with pytest.raises(ConfigError, match="API_BACKUP_INTERVAL"):
            interval(bad)
    assert keep("0") == 0 and keep("24") == 24
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(ConfigError, match="API_BACKUP_KEEP"):
            keep(bad)


def test_scheduler_takes_and_prunes_backups(manager: ConfigManager) -> None:
    manager.set_height(9)
    seen: list[bk.BackupInfo] = []
    settings = Settings.from_env({"API_BACKUP_INTERVAL": "0.05s", "API_BACKUP_KEEP": "2"})
    sched = bk.BackupScheduler(
        lambda: manager.backend.kept_backup("scheduled", keep=settings.backup_keep),
        interval=settings.backup_interval,
        on_backup=seen.append,
    )
    assert sched.interval == 0.05
    sched.start()
    try:
        deadline = threading.Event()
        for _ in range(600):  # bounded wait, no timing assertion
            if len(seen) >= 4:
                break
            deadline.wait(0.05)
    finally:
        sched.stop()
    assert len(seen) >= 4
    listed = manager.list_backups()
    assert 1 <= len(listed) <= 2 and all(b.reason == "scheduled" and b.ok for b in listed)


def test_scheduler_failure_is_logged_not_raised(tmp_path: Path) -> None:
    sched = bk.BackupScheduler(lambda: bk.create_backup(tmp_path / "missing.db"), interval=3600)
    assert sched.run_once() is None and sched.last is None


def test_backup_file_modes_even_with_permissive_umask(manager: ConfigManager) -> None:
    manager.set_height(1)
    old = os.umask(0)
    try:
        info = manager.backup()
    finally:
        os.umask(old)
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600


@pytest.mark.sqlite_only
def test_schema_change_takes_a_backup_of_the_old_schema_first(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dapi_config.store import migrations

    with ConfigManager.open(config_file) as cm:
        cm.set_height(12)
        backup_dir = cm.backup_dir
        old_version = cm.backend.schema_version()
    ddl = "CREATE TABLE extra (x INTEGER);"
    step = migrations.Migration(old_version + 1, "test step", ddl, ddl)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, step))
    monkeypatch.setattr(migrations, "LATEST_VERSION", step.version)
    with ConfigManager.open(config_file) as cm:
        assert cm.backend.schema_version() == step.version
        assert cm.get_height() == 12
    made = bk.list_backups(backup_dir)
    assert [b.reason for b in made] == [f"pre-schema-v{step.version}"]
    assert made[0].ok and made[0].schema_version == old_version and made[0].revision == 1


def test_manual_backups_are_kept_to_api_backup_keep(
    config_file: Path, state_env: dict[str, str], tmp_path: Path
) -> None:
    """Seen on main: manual backups (POST /admin/v1/backups in a loop) were never pruned."""
    with ConfigManager.open(config_file, env={**state_env, "API_BACKUP_KEEP": "2"}) as cm:
        cm.set_height(1)
        taken = [cm.backup() for _ in range(4)]
        elsewhere = [cm.backup(tmp_path / f"mine-{i}.db") for i in range(3)]
        assert [b.path for b in cm.list_backups()] == [b.path for b in reversed(taken[2:])]
        assert all(b.path.exists() for b in elsewhere)  # --out backups are the operator's
