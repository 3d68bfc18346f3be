"""The state file and its companions are private (0600), whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dapi_config import ConfigManager


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_and_companions_are_0600(config_file: Path, permissive_umask: None) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(1)
        state = cm.state_path
        wal = Path(f"{state}-wal")
        shm = Path(f"{state}-shm")
        assert wal.exists() and shm.exists(), "WAL mode keeps both companions while open"
        assert mode(state) == 0o600
        assert mode(wal) == 0o600
        assert mode(shm) == 0o600


def test_existing_loose_state_file_is_tightened(config_file: Path, permissive_umask: None) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(1)
        state = cm.state_path
    state.chmod(0o666)
    with ConfigManager.open(config_file) as cm:
        assert mode(state) == 0o600
        assert cm.get_height() == 1


def test_state_directory_is_created(config_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "state.db"
    with ConfigManager.open(config_file, state_path=target) as cm:
        cm.set_height(2)
    assert mode(target) == 0o600
