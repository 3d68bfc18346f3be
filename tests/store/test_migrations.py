"""Schema steps: recorded, idempotent, and a newer or foreign file is refused untouched."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from dapi_config import ConfigManager, SchemaTooNewError, StateUnavailableError
from dapi_config.store.connection import APPLICATION_ID
from dapi_config.store.migrations import LATEST_VERSION, MIGRATIONS


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_file_gets_every_step_recorded(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        state = cm.state_path
    conn = sqlite3.connect(state)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert recorded == [m.version for m in MIGRATIONS]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # The proposal's table names, kept for operators using the sqlite3 shell.
        assert {
            "chain_state",
            "seed_info",
            "network_params",
            "node_versions",
            "upgrade_plans",
            "inference_nodes",
            "mlnode_security",
        } <= tables
    finally:
        conn.close()


def test_reopen_applies_nothing_twice(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(4)
        state = cm.state_path
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 4
    conn = sqlite3.connect(state)
    try:
        count = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0]
    finally:
        conn.close()
    assert count == len(MIGRATIONS)


def test_newer_schema_is_refused_and_untouched(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(9)
        state = cm.state_path
    conn = sqlite3.connect(state)
    conn.execute(f"PRAGMA user_version={LATEST_VERSION + 1}")
    conn.close()
    before = digest(state)
    with pytest.raises(SchemaTooNewError) as info:
        ConfigManager.open(config_file)
    assert info.value.found == LATEST_VERSION + 1
    assert "newer" in str(info.value)
    assert digest(state) == before


def test_foreign_sqlite_file_is_refused(config_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE mine(x)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    before = digest(other)
    with pytest.raises(StateUnavailableError, match="not a dapi-config state file"):
        ConfigManager.open(config_file, state_path=other)
    assert digest(other) == before
