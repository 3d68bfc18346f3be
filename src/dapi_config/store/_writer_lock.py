"""The writers' queue between processes: one ``flock`` on a file beside the state file.

SQLite lets one process write at a time, and a process that finds the write lock taken
sleeps in its busy handler (1, 2, 5, 10 ms ... rising) and tries again: between two busy
processes (the workers of ``serve --workers N``, a CLI beside the service) the loser keeps
sleeping while the winner takes the lock again, so its writes wait for tens of milliseconds,
some for seconds. Before ``BEGIN IMMEDIATE`` a writer therefore waits for its turn in the
kernel, on ``flock`` of ``<state file>-writers``: woken the moment the holder's transaction
ends, no polling. SQLite's own lock stays what keeps the file consistent; this only orders the
writers that take it (a process that does not, an older version, is still held off by
SQLite's lock and its busy timeout).

Each :class:`~.connection.Database` opens the file once per process (a ``flock`` belongs to
the open file description: a descriptor inherited across ``fork()`` is not used, it would
share the parent's lock). It is never removed: removing a lock file races with processes
waiting on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

#: The lock file's name: the state file's plus this.
SUFFIX = "-writers"


class WriterTurn:
    """The exclusive turn to write ``path`` among processes (see the module)."""

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = Path(f"{path}{SUFFIX}")
        self._fd: int | None = None
        self._held = False
        #: False when off, or once the file could not be opened (a read-only directory):
        #: SQLite's lock alone orders the writers then.
        self.usable = enabled

    def acquire(self) -> None:
        """Wait for the turn (returns at once when the file cannot be used)."""
        fd = self._descriptor()
        if fd is None:
            return
        fcntl.flock(fd, fcntl.LOCK_EX)  # the GIL is released while it waits
        self._held = True

    def release(self) -> None:
        """End the turn (nothing when not held)."""
        if self._held:
            self._held = False
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def forget_inherited(self) -> None:
        """In a child after ``fork()``: drop the parent's descriptor without unlocking it
        (closing our copy leaves the parent's lock as it is)."""
        fd, self._fd, self._held = self._fd, None, False
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Release and close (the next :meth:`acquire` opens the file again)."""
        self.release()
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _descriptor(self) -> int | None:
        if self._fd is None and self.usable:
            try:
                self._fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
                )
            except OSError:
                self.usable = False  # SQLite's own lock still orders the writers
        return self._fd
