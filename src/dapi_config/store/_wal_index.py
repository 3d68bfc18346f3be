"""A cheap "has anyone committed?" check: read the WAL-index header in the ``-shm`` file.

Why this is correct (https://sqlite.org/walformat.html, "The WAL-Index Header"):

- In WAL mode with the default (``normal``) locking mode, every connection in every process
  shares the WAL-index through the ``-shm`` file, mapped with ``MAP_SHARED``.
- Its first 48 bytes (header copy 1: ``iChange``, ``mxFrame``, ``nPage``, the last frame's
  checksum, the WAL salts and the header checksum) are rewritten by every commit before the
  commit returns; a writer stores copy 2 first and copy 1 last. ``mxFrame`` and the frame
  checksum move on every commit, and a WAL reset after a checkpoint increments salt 1, so a
  commit never leaves copy 1 as it was.
- Changes that commit nothing (checkpoints, a WAL restart) may also rewrite the header: that
  costs one needless refresh, never a stale value.
- The mapping stays the live file: while any connection of this process has the database open
  in WAL mode it holds a SHARED lock on the database file, and SQLite deletes ``-shm`` only
  after taking an EXCLUSIVE lock (the last connection closing) or leaving WAL mode (which also
  needs EXCLUSIVE).

A reader therefore records the header *before* it reads the values from SQL; while the header
is byte-for-byte the recorded one, no commit has happened since and the values are current.

When the header cannot be used (no ``-shm`` file, ``locking_mode=EXCLUSIVE`` where the index
lives in heap memory, an unknown header version), :func:`open_wal_index` returns None and the
caller falls back to ``PRAGMA data_version``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import struct
from pathlib import Path

#: Bytes of header copy 1, the part every commit rewrites.
HEADER_SIZE = 48
#: Both header copies plus the checkpoint info: the smallest mapping that holds the header.
_MAPPED = 136
#: ``iVersion`` of every WAL-index SQLite has written since 3.7.0.
WALINDEX_VERSION = 3007000


def open_wal_index(db_path: str | os.PathLike[str], conn: sqlite3.Connection) -> mmap.mmap | None:
    """Map the WAL-index header of ``db_path`` read-only, or None when it cannot be trusted.

    ``conn`` must be an open connection to the file that has already read from it (so it holds
    its SHARED lock and the index is initialised). It is used only to check the modes.
    """
    try:
        journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        locking = str(conn.execute("PRAGMA locking_mode").fetchone()[0]).lower()
    except sqlite3.Error:
        return None
    if journal != "wal" or locking != "normal":
        return None
    shm = Path(f"{os.fspath(db_path)}-shm")
    try:
        fd = os.open(shm, os.O_RDONLY)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size < _MAPPED:
            return None
        mapped = mmap.mmap(fd, _MAPPED, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    version, _unused, _change, is_init = struct.unpack_from("=IIIB", mapped, 0)
    if version != WALINDEX_VERSION or not is_init:
        mapped.close()
        return None
    return mapped


def close_wal_index(mapped: mmap.mmap | None) -> None:
    """Unmap (idempotent; a concurrent reader then falls back to SQL)."""
    if mapped is not None:
        with contextlib.suppress(BufferError):
            mapped.close()
