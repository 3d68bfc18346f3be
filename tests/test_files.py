"""Directory entries are made durable: every directory the product creates is followed by an
fsync of its parent (power loss otherwise drops the new entry and everything renamed into it).

The spy below lets every real ``fsync`` run and records which path each one synced, so a test
can say "the state folder was fsynced after ``backups/`` was created". The power-loss
simulator checks the same thing by dropping unsynced entries; this is the cheap reproduction.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig, legacy
from dapi_config._files import make_durable_dir
from dapi_config.errors import DapiConfigError
from dapi_config.store import SqliteStore
from dapi_config.store import recovery as rc


class FsyncSpy:
    """Records, in order, the real path of every fd passed to ``os.fsync`` and, for every
    directory made by ``os.mkdir``, how many fsyncs had happened by then."""

    def __init__(self) -> None:
        self.synced: list[Path] = []
        self.made_at: dict[Path, int] = {}

    def synced_after(self, created: Path) -> list[Path]:
        """Paths fsynced after ``created`` was made."""
        return self.synced[self.made_at[created] :]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FsyncSpy]:
    recorder = FsyncSpy()
    real_fsync, real_mkdir = os.fsync, os.mkdir

    def fsync(fd: int) -> None:
        recorder.synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def mkdir(path: str | os.PathLike[str], mode: int = 0o777, **kwargs: object) -> None:
        real_mkdir(path, mode, **kwargs)  # type: ignore[arg-type]
        recorder.made_at[Path(path).resolve()] = len(recorder.synced)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "mkdir", mkdir)
    yield recorder


def test_make_durable_dir_fsyncs_the_parent_of_each_created_directory(
    tmp_path: Path, spy: FsyncSpy
) -> None:
    target = tmp_path / "a" / "b"
    assert make_durable_dir(target, mode=0o700) == target
    assert target.is_dir() and (target.stat().st_mode & 0o777) == 0o700
    assert tmp_path.resolve() in spy.synced_after((tmp_path / "a").resolve())
    assert (tmp_path / "a").resolve() in spy.synced_after(target.resolve())
    spy.synced.clear()
    make_durable_dir(target)  # exists: nothing to make durable
    assert spy.synced == []


def test_first_backup_makes_the_backups_folder_durable(
    manager: ConfigManager, spy: FsyncSpy
) -> None:
    """Reproduction: ``backups/`` came from a bare mkdir, so a power cut after ``backup()``
    returned could drop the folder entry and every backup in it (65 of 100 rounds)."""
    manager.set_height(1)
    info = manager.backup()
    backups = manager.backup_dir.resolve()
    assert info.path.parent.resolve() == backups
    assert manager.state_path.parent.resolve() in spy.synced_after(backups)


def test_quarantine_makes_its_folders_durable(tmp_path: Path, spy: FsyncSpy) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"garbage, not a database")
    folder = rc.quarantine(state)
    assert folder is not None and (folder / "state.db").exists()
    top = (tmp_path / rc.QUARANTINE_DIR_NAME).resolve()
    assert tmp_path.resolve() in spy.synced_after(top)
    assert top in spy.synced_after(folder.resolve())


def test_legacy_import_commits_durably_under_normal_durability(tmp_path: Path) -> None:
    """Reproduction: with ``durability="normal"`` the import committed without syncing the WAL
    and then the config lost its dynamic keys (fsynced), so a power cut could leave neither.
    The import's commit must run with ``synchronous=FULL``, whatever the setting."""
    config = tmp_path / "config.yaml"
    config.write_text("api:\n    port: 8080\ncurrent_height: 77\n")
    store = SqliteStore.open(tmp_path / "state.db", durability="normal")
    seen: list[int] = []
    real_set = store.set_chain_value

    def set_and_probe(key: str, value: str) -> None:
        # Inside the write transaction: the setting its COMMIT will run with.
        seen.append(store.db.query_one("PRAGMA synchronous")[0])
        real_set(key, value)

    store.set_chain_value = set_and_probe  # type: ignore[method-assign]
    try:
        report = legacy.migrate_legacy_file(store, config)
        assert report.action == "migrated"
        assert seen == [2]  # FULL while the import committed
        with store.transaction():
            store.set_chain_value("current_height", "78")
        assert seen == [2, 1]  # ordinary writes keep the configured durability
    finally:
        store.close()
    assert "current_height" not in config.read_text()


def test_durable_transaction_cannot_nest(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db", durability="normal")
    try:
        with (
            pytest.raises(DapiConfigError, match="cannot be nested"),
            store.transaction(),
            store.transaction(durable=True),
        ):
            pass
        with store.transaction(durable=True):
            store.add_node(InferenceNodeConfig(id="n", host="h", inference_port=1, poc_port=2))
        assert [n.id for n in store.nodes()] == ["n"]
    finally:
        store.close()
