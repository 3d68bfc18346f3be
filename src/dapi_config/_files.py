"""Crash-safe file writes shared by every module that writes a file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from dapi_config.errors import ConfigError

T = TypeVar("T")

#: The companions SQLite may leave beside a database file it wrote.
SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync a file's data (and size) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so the entries created, renamed or removed in it survive power loss
    (a file's own fsync does not make its name durable)."""
    fsync_file(directory)


def remove_with_companions(path: str | os.PathLike[str]) -> None:
    """Delete ``path`` and the ``-journal``/``-wal``/``-shm`` files SQLite may have left
    beside it; missing files are fine."""
    for suffix in ("", *SQLITE_COMPANIONS):
        with contextlib.suppress(OSError):
            os.unlink(f"{os.fspath(path)}{suffix}")


def temp_path_for(target: Path) -> Path:
    """A hidden temp name beside ``target``, unique to this process and thread."""
    return target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def copy_file(source: str | os.PathLike[str], destination: Path) -> None:
    """Copy ``source``'s bytes into the (existing, private) file ``destination``."""
    with open(source, "rb") as src, open(destination, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def stage_verified(
    target: Path,
    fill: Callable[[Path], None],
    verify: Callable[[Path], T],
    *,
    before_rename: Callable[[], None] | None = None,
) -> T:
    """Make ``target`` appear whole or not at all, holding only content that passed a check.

    The steps every verified file of the product goes through: a private (0600) temp file
    beside ``target``; ``fill(tmp)`` writes it; ``verify(tmp)`` checks it (raise to abort) and
    its result is returned; the temp file is fsynced, renamed over ``target`` and the directory
    fsynced. On any error the temp file and its SQLite companions are removed, ``target`` is
    untouched, and the error propagates. ``before_rename`` is a hook for fault injection.
    """
    tmp = temp_path_for(target)
    remove_with_companions(tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)  # whatever the umask
        os.close(fd)
        fill(tmp)
        result = verify(tmp)
        os.chmod(tmp, 0o600)
        fsync_file(tmp)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, target)
    except BaseException:
        remove_with_companions(tmp)
        raise
    fsync_directory(target.parent)
    return result


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


def sqlite_family(path: str | os.PathLike[str]) -> list[Path]:
    """A SQLite file and the companions SQLite keeps beside it."""
    return [Path(f"{os.fspath(path)}{suffix}") for suffix in ("", *SQLITE_COMPANIONS)]


def choose_output(
    out: str | os.PathLike[str],
    *,
    protected: Iterable[Path],
    force: bool,
    default_name: str | None = None,
) -> Path:
    """Where a command's ``--out`` may write: never one of the ``protected`` files (the state,
    its companions, its key, the config, backups); an existing file only with ``force``. A
    path ending in ``/`` (or naming a directory) is a directory, created when missing: the
    file is ``default_name`` in it, or, without one, the directory is returned and the caller
    names the file. Raises :class:`ConfigError`; nothing is written."""
    text = os.fspath(out)
    target = Path(text)
    if text.endswith(os.sep) or target.is_dir():
        if target.exists() and not target.is_dir():
            raise ConfigError(f"{text}: not a directory (it is a file); nothing was written")
        try:
            directory = make_durable_dir(target)
        except OSError as exc:
            raise ConfigError(f"{text}: cannot create the directory: {exc.strerror}") from None
        if default_name is None:
            return directory
        target = directory / default_name
        text = str(target)
    if not target.parent.is_dir():
        raise ConfigError(
            f"{text}: the directory {target.parent} does not exist (end the path with / to "
            "write into a new directory); nothing was written"
        )
    resolved = target.resolve()
    for own in protected:
        if own.resolve() == resolved:
            raise ConfigError(
                f"{text}: refusing to write over {own}, one of dapi-config's own files "
                "(state, key, config or backup); pick another path. Nothing was written"
            )
    if target.exists() and not force:
        raise ConfigError(
            f"{text}: the file exists; pass --force to replace it. Nothing was written"
        )
    return target
