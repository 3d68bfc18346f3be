"""Which POSIX record locks a process holds on a file, read from ``/proc/locks``.

SQLite keeps a SHARED lock on the database file (and read locks on ``-shm``) for as long as a
connection in WAL mode is open; a process that has lost them lets another process believe it
is the last connection anywhere and delete the ``-wal`` under it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def posix_locks(pid: int, path: str | os.PathLike[str]) -> list[str]:
    """The ``/proc/locks`` lines of POSIX locks ``pid`` holds on the file at ``path``."""
    proc_locks = Path("/proc/locks")
    if not proc_locks.exists():
        pytest.skip("/proc/locks is not available on this system")
    st = os.stat(path)
    found = []
    for line in proc_locks.read_text().splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[1] == "->":  # a waiter, not a holder
            continue
        kind, owner, device = parts[1], parts[4], parts[5]
        major, minor, inode = device.split(":")
        if (
            kind == "POSIX"
            and int(owner) == pid
            and int(inode) == st.st_ino
            and os.makedev(int(major, 16), int(minor, 16)) == st.st_dev
        ):
            found.append(line)
    return found


def assert_holds_locks(pid: int, state: Path, after: str) -> None:
    """``pid`` still holds its SQLite locks on ``state`` and its ``-shm`` (``after``: what ran
    before, for the message)."""
    assert posix_locks(pid, state), f"the process lost its lock on {state.name} after {after}"
    shm = Path(f"{state}-shm")
    assert posix_locks(pid, shm), f"the process lost its lock on {shm.name} after {after}"
