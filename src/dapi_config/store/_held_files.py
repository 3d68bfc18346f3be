"""One descriptor per live state file and process, so that reading it never drops SQLite's locks.

POSIX record locks belong to the process, and closing ANY descriptor of a file releases every
lock the process holds on it (SQLite's "How To Corrupt", §2.2). A readiness probe that opened the
state file to read its header and closed it again silently dropped the service's SHARED lock;
the next CLI command then believed it was the last connection anywhere, checkpointed and deleted
the ``-wal`` and ``-shm`` under the running service, and the service's later writes went into an
unlinked file.

So in the store, nothing opens a live state file by path but this module:

- Each file (by device and inode) has at most one descriptor in a process, shared by every
  reader. :class:`~.connection.Database` holds a reference from its first use of the file to its
  close, so while it has connections (and SQLite has locks) the descriptor stays open.
- A read outside an open Database (the open-time check, ``check``, a restore) takes a reference
  for its own duration; the descriptor is closed when the last reference goes, which is when no
  Database of this process has the file open and no SQLite connection of ours holds a lock.
- SQLite takes no locks on ``-wal`` (the WAL's locks live in ``-shm``, which
  :mod:`._wal_index` maps by the same rule), so fsyncing a ``-wal`` by path is harmless.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

__all__ = ["FileRef", "acquire", "create_private", "held_count", "read_prefix", "release"]


@dataclass
class _Entry:
    fd: int
    refs: int = 0


# (st_dev, st_ino) -> the one descriptor of that file in this process.
_OPEN: dict[tuple[int, int], _Entry] = {}
_LOCK = [threading.Lock()]  # a list so the fork handler can replace it
# Descriptors opened for a file that already had one (the name moved to a file we hold between
# a stat and an open): closed only together with the held one.
_PARKED: dict[tuple[int, int], list[int]] = {}


@dataclass(frozen=True)
class FileRef:
    """A reference to the held descriptor of one file; :func:`release` it exactly once."""

    key: tuple[int, int]
    fd: int


def _register(fd: int) -> tuple[tuple[int, int], _Entry]:
    """File ``fd`` under its identity; when that file is held already, ``fd`` is parked beside
    the held descriptor (closing it now would release the locks the process holds)."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    entry = _OPEN.get(key)
    if entry is None:
        entry = _OPEN[key] = _Entry(fd)
    elif entry.fd != fd:
        _PARKED.setdefault(key, []).append(fd)
    return key, entry


def acquire(path: str | os.PathLike[str], *, create: bool = False) -> FileRef:
    """A reference to the descriptor of the file now at ``path`` (opened if this process holds
    none). ``create``: create it 0600 when missing and make an existing one 0600 (a state file
    is private). Raises :class:`OSError` (missing file without ``create``, permissions)."""
    with _LOCK[0]:
        entry = None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not create:
                raise
        else:
            entry = _OPEN.get((st.st_dev, st.st_ino))
        if entry is None:
            flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
            fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
            key, entry = _register(fd)
        else:
            key = (st.st_dev, st.st_ino)
        if create:
            os.fchmod(entry.fd, 0o600)
        entry.refs += 1
        return FileRef(key, entry.fd)


def release(ref: FileRef) -> None:
    """Give ``ref`` back; the last reference closes the descriptor (see the module doc)."""
    with _LOCK[0]:
        entry = _OPEN.get(ref.key)
        if entry is None or entry.fd != ref.fd:
            return
        entry.refs -= 1
        if entry.refs <= 0:
            del _OPEN[ref.key]
            for fd in (*_PARKED.pop(ref.key, ()), entry.fd):
                os.close(fd)


def read_prefix(path: str | os.PathLike[str], size: int) -> bytes:
    """The first ``size`` bytes of the file at ``path`` (fewer for a short file), read through
    the held descriptor. Raises :class:`OSError`."""
    ref = acquire(path)
    try:
        return os.pread(ref.fd, size, 0)
    finally:
        release(ref)


def create_private(path: str | os.PathLike[str]) -> None:
    """Create ``path`` 0600 if missing, or make it 0600, without closing a held descriptor."""
    release(acquire(path, create=True))


def held_count() -> int:
    """How many files this process holds a descriptor of (for tests)."""
    with _LOCK[0]:
        return len(_OPEN)


def _renew_after_fork() -> None:
    # A thread of the parent may have held the lock at fork(); the descriptors stay: a
    # Database copied into the child still holds its reference and releases it at close.
    _LOCK[0] = threading.Lock()


os.register_at_fork(after_in_child=_renew_after_fork)
