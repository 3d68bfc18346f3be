"""A cheap "has anyone committed?" check: read the WAL-index header in the ``-shm`` file.

Why the check is exact (https://sqlite.org/walformat.html, "The WAL-Index Header"):

- In WAL mode with the default (``normal``) locking mode, every connection in every process
  shares the WAL-index through the ``-shm`` file, mapped with ``MAP_SHARED``.
- Its first 48 bytes (header copy 1: ``iChange``, ``mxFrame``, ``nPage``, the last frame's
  checksum, the WAL salts and the header checksum) are rewritten by every commit before the
  commit returns; a writer stores copy 2 first and copy 1 last. ``mxFrame`` and the frame
  checksum move on every commit, and a WAL reset after a checkpoint increments salt 1, so a
  commit never leaves copy 1 as it was.
- Changes that commit nothing (checkpoints, a WAL restart) may also rewrite the header: that
  costs one needless refresh, never a stale value.
- The mapping stays the live file: while a connection of this process has the database open in
  WAL mode it holds a SHARED lock on the database file and a read lock on the index's "DMS"
  byte. SQLite deletes ``-shm`` only under an EXCLUSIVE lock (the last connection anywhere
  closing, or leaving WAL mode) and re-initialises (truncates) it only when no process holds
  the DMS lock.

A reader therefore records the header *before* it reads the values from SQL; while the header
is byte-for-byte the recorded one, no commit has happened since and the values are current.

POSIX record locks belong to the process and are ALL released when the process closes ANY
descriptor of the file (SQLite's "How To Corrupt", §2.2). Closing our descriptor of ``-shm``
would silently drop SQLite's own locks on it, so descriptors here are closed only when that is
provably harmless: the file has been unlinked (``st_nlink == 0``: SQLite deleted it after the
last connection anywhere closed, and nobody can open it again by name), or in a freshly forked
child (which inherits no locks). Live files keep one descriptor per process, reused by every
store on that file.

When the header cannot be used (no ``-shm`` file, ``locking_mode=EXCLUSIVE`` where the index
lives in heap memory, an unknown header version), :func:`open_wal_index` returns None and the
caller falls back to ``PRAGMA data_version``.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
import threading
from dataclasses import dataclass

from dapi_config.store import connection

#: Bytes of header copy 1, the part every commit rewrites.
HEADER_SIZE = 48
#: Both header copies plus the checkpoint info: the smallest mapping that holds the header.
_MAPPED = 136
#: ``iVersion`` of every WAL-index SQLite has written since 3.7.0.
WALINDEX_VERSION = 3007000


@dataclass
class _Mapping:
    fd: int
    view: mmap.mmap
    users: int = 0


# (st_dev, st_ino) of a -shm file -> its one mapping in this process.
_MAPS: dict[tuple[int, int], _Mapping] = {}
# Descriptors we could not use but must not close while their file is live.
_PARKED: list[int] = []
_LOCKS = [threading.Lock()]  # a list so the fork handler can replace the lock


class WalIndex:
    """A read-only view of one ``-shm`` file's header, shared by the stores of this process."""

    def __init__(self, key: tuple[int, int], view: mmap.mmap) -> None:
        self._key = key
        self.view = view
        self._released = False

    def release(self) -> None:
        """This store no longer reads the header (idempotent)."""
        with _LOCKS[0]:
            if self._released:
                return
            self._released = True
            mapping = _MAPS.get(self._key)
            if mapping is not None and mapping.view is self.view:
                mapping.users -= 1
            _sweep()


def open_wal_index(db_path: str | os.PathLike[str], conn: sqlite3.Connection) -> WalIndex | None:
    """Map the WAL-index header of ``db_path`` read-only, or None when it cannot be trusted.

    ``conn`` must be an open connection to the file that has already read from it (so it holds
    its locks and the index is initialised). It is used only to check the modes.
    """
    try:
        journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        locking = str(conn.execute("PRAGMA locking_mode").fetchone()[0]).lower()
    except connection.SQLITE_ERRORS:
        return None
    if journal != "wal" or locking != "normal":
        return None
    shm = f"{os.fspath(db_path)}-shm"
    with _LOCKS[0]:
        _sweep()
        try:
            st = os.stat(shm)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        mapping = _MAPS.get(key)
        if mapping is None:
            mapping = _map(shm)
            if mapping is None:
                return None
            key = _key(mapping.fd)
        if not _header_ok(mapping.view):
            return None
        mapping.users += 1
        return WalIndex(key, mapping.view)


def _map(shm: str) -> _Mapping | None:
    try:
        fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    # From here on ``fd`` may only be closed by _sweep (see the module docstring).
    key = _key(fd)
    existing = _MAPS.get(key)
    if existing is not None:  # the name moved to an inode we already map
        _PARKED.append(fd)
        return existing
    try:
        if os.fstat(fd).st_size < _MAPPED:
            raise ValueError("WAL-index not initialised")
        view = mmap.mmap(fd, _MAPPED, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError):
        _PARKED.append(fd)
        return None
    mapping = _Mapping(fd, view)
    _MAPS[key] = mapping
    return mapping


def _key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _header_ok(view: mmap.mmap) -> bool:
    version, _unused, _change, is_init = struct.unpack_from("=IIIB", view, 0)
    return bool(version == WALINDEX_VERSION and is_init)


def _unlinked(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return False


def _sweep() -> None:
    """Close what belongs to ``-shm`` files SQLite has deleted (caller holds the lock)."""
    for key, mapping in list(_MAPS.items()):
        if mapping.users <= 0 and _unlinked(mapping.fd):
            del _MAPS[key]
            mapping.view.close()
            os.close(mapping.fd)
    for fd in list(_PARKED):
        if _unlinked(fd):
            _PARKED.remove(fd)
            os.close(fd)


def _forget_after_fork() -> None:
    # A forked child holds no POSIX locks, so closing the inherited descriptors is harmless
    # there; its stores fall back to data_version on their own fresh connections.
    _LOCKS[0] = threading.Lock()
    for mapping in _MAPS.values():
        mapping.view.close()
        os.close(mapping.fd)
    _MAPS.clear()
    for fd in _PARKED:
        os.close(fd)
    _PARKED.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
