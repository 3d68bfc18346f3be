"""Crash-safe file writes shared by every module that writes a file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """fsync a directory so a rename inside it survives power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable_dir(directory: str | os.PathLike[str], mode: int = 0o700) -> Path:
    """Create ``directory`` (and missing parents) so that its entry survives power loss.

    ``mkdir`` alone leaves the new entry in the parent's page cache: a file later renamed into
    the new directory (and that directory fsynced) is still lost with it when the power goes
    before something else happens to fsync the parent. So every directory created here is
    followed by an fsync of its parent. ``mode`` applies to ``directory`` itself, missing parents
    get the default (umask) mode; an existing directory is left as it is.
    """
    path = Path(directory)
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):
            created.mkdir(mode=mode if created == path else 0o777)
        fsync_directory(created.parent)
    return path


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    Writes a temp file in the same directory, fsyncs it, renames it over ``path`` and fsyncs the
    directory. The new file gets ``mode`` (0600 by default; pass the old file's mode to keep it)
    and, when ``owner`` (uid, gid) is given and differs from ours, that owner (best effort: only
    root may give a file away). On any error the temp file is removed and ``path`` is untouched.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            with contextlib.suppress(PermissionError):
                os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    fsync_directory(target.parent)


def file_owner(st: os.stat_result) -> tuple[int, int]:
    """(uid, gid) of a stat result, for :func:`atomic_write`'s ``owner``."""
    return st.st_uid, st.st_gid


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600) for the block.

    Serialises writers of one file across processes; within a process, callers also need
    their own thread lock (flock is per open file, so two threads would both get it).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
