"""Online backups of the state file: create, verify, list, prune, and the backup scheduler.

A backup is made with SQLite's backup API in ONE step (``pages=-1``): a paced, page-by-page
backup restarts every time another connection commits and may never finish under a steady
writer, while one step copies a consistent snapshot under a single read transaction (WAL
writers keep going meanwhile). The copy goes to a temp file (created 0600 first: SQLite would
create it 0644), is switched to rollback-journal mode so it is one self-contained file, checked
(``integrity_check``, application id, schema version), fsynced, then renamed into place and the
directory fsynced. A backup that fails its check is deleted and reported; it never replaces
anything. Before copying, the snapshot it copies is made durable in the state file itself (the
``-wal`` and the state folder fsynced): under ``durability="normal"`` the newest commits may
still be only in the page cache, and a backup that held them would, after a power cut, be
*ahead* of the state file -- the next start would then find the file emptier than its backups.

Backups live in ``<state dir>/backups/`` as ``<state stem>-<UTC time>-<reason>.db`` (reason:
``manual``, ``scheduled``, ``pre-restore``, ``pre-schema-v2``, ``pre-set-nodes``,
``pre-legacy-migration``...). Retention keeps the newest ``keep`` backups of each reason,
manual ones included (the manager prunes them after each manual backup); a backup written
elsewhere (``--out``) is never pruned.

An encrypted state file (:mod:`.sqlcipher`) gives encrypted backups with the same key (SQLCipher's
backup API copies between files with the same key only). A backup can be read only in the mode
it was made in: while encryption is on, plain backups (from before ``dapi-config encrypt``) are
reported as unusable, and the other way round; after ``rekey`` the old backups need the old key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dapi_config import _failpoints
from dapi_config._files import fsync_directory, fsync_file, make_durable_dir, stage_verified
from dapi_config._periodic import Periodic
from dapi_config.errors import BackupError, DapiConfigError
from dapi_config.settings import DEFAULT_BACKUP_INTERVAL_S, DEFAULT_BACKUP_KEEP
from dapi_config.store import _held_files, connection
from dapi_config.store import sqlcipher as _cipher
from dapi_config.store.connection import (
    APPLICATION_ID,
    BUSY_TIMEOUT_S,
    is_not_a_database,
    sqlite_error_message,
)
from dapi_config.store.migrations import LATEST_VERSION
from dapi_config.store.sqlcipher import StateCipher

log = logging.getLogger("dapi_config.backup")

BACKUP_DIR_NAME = "backups"
SQLITE_MAGIC = b"SQLite format 3\x00"
MANUAL = "manual"
SCHEDULED = "scheduled"
#: Defaults of ``API_BACKUP_INTERVAL`` and ``API_BACKUP_KEEP``.
#: A temp file untouched this long belongs to a backup that died; it is removed.
STALE_TEMP_S = 600.0

_TS_FORMAT = "%Y%m%dT%H%M%S%fZ"
_NAME_RE = re.compile(r"^(?P<stem>.+)-(?P<ts>\d{8}T\d{12}Z)-(?P<reason>[a-z0-9][a-z0-9.-]*)\.db$")
_REASON_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@dataclass(frozen=True)
class BackupInfo:
    """One backup file and what its check found (``problem`` is None for a good backup)."""

    path: Path
    created_at: datetime
    size: int
    schema_version: int
    #: The newest audit revision in the copy: what the state looked like when it was taken.
    revision: int
    reason: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when the backup passed its integrity check and can be restored."""
        return self.problem is None

    def age_seconds(self, now: datetime | None = None) -> float:
        """Seconds since the backup was taken."""
        return ((now or datetime.now(UTC)) - self.created_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output (CLI, HTTP)."""
        return {
            "path": str(self.path),
            "created_at": self.created_at.isoformat(),
            "age_seconds": round(self.age_seconds(), 3),
            "size": self.size,
            "schema_version": self.schema_version,
            "revision": self.revision,
            "reason": self.reason,
            "ok": self.ok,
            "problem": self.problem,
        }


def backup_dir_for(state_path: str | os.PathLike[str]) -> Path:
    """``<state dir>/backups``: where automatic and scheduled backups go."""
    return Path(state_path).parent / BACKUP_DIR_NAME


def backup_name(state_path: str | os.PathLike[str], reason: str, when: datetime) -> str:
    """``<state stem>-<UTC time>-<reason>.db``."""
    return f"{Path(state_path).stem}-{when.strftime(_TS_FORMAT)}-{reason}.db"


def _readonly_uri(path: Path) -> str:
    # immutable=1: read the file as it is, take no locks, create no -wal/-shm beside a backup.
    return f"{path.resolve().as_uri()}?mode=ro&immutable=1"


def read_header(path: Path) -> bytes:
    """The first 100 bytes of ``path`` (the SQLite header), or fewer for a short file; read
    through the process's held descriptor (a live file's locks stay: see :mod:`._held_files`)."""
    return _held_files.read_prefix(path, 100)


def inspect_backup(
    path: str | os.PathLike[str], *, cipher: StateCipher | None = None
) -> BackupInfo:
    """Check a backup file: header, ``integrity_check``, application id, schema version.

    ``cipher``: the key encrypted backups are read with (None: plain files).
    Never raises for a damaged file (or one made in the other encryption mode): the result's
    ``problem`` says what is wrong. Raises :class:`BackupError` only when the file does not
    exist.
    """
    file = Path(path)
    key = cipher
    try:
        stat = file.stat()
    except OSError as exc:
        raise BackupError(f"{file}: cannot read the backup ({exc.strerror})") from None
    match = _NAME_RE.match(file.name)
    if match:
        created = datetime.strptime(match["ts"], _TS_FORMAT).replace(tzinfo=UTC)
        reason = match["reason"]
    else:
        created = datetime.fromtimestamp(stat.st_mtime, UTC)
        reason = MANUAL
    info = BackupInfo(file, created, stat.st_size, 0, 0, reason)
    try:
        header = read_header(file)
    except OSError as exc:
        return replace(info, problem=f"cannot read ({exc.strerror})")
    plain = header.startswith(SQLITE_MAGIC)
    if key is None and (len(header) < 100 or not plain):
        return replace(
            info,
            problem="not an SQLite database (bad or missing header; or encrypted: "
            f"{_cipher.maybe_encrypted_hint()})",
        )
    if key is not None and plain:
        return replace(
            info,
            problem="not encrypted (made while state-file encryption was off); restore it "
            f"with {_cipher.ENV_MODE} unset, then run `dapi-config encrypt`",
        )
    if len(header) < 100:
        return replace(info, problem="truncated (shorter than one page)")
    try:
        conn = _cipher.connect(_readonly_uri(file), key, uri=True, isolation_level=None)
    except connection.SQLITE_ERRORS as exc:
        return replace(info, problem=f"cannot open ({exc})")
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            return replace(info, problem="integrity check failed: " + "; ".join(rows[:3]))
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        info = replace(info, schema_version=version)
        if app_id != APPLICATION_ID or version == 0:
            return replace(info, problem="not a dapi-config state file (application_id)")
        if version > LATEST_VERSION:
            return replace(
                info,
                problem=f"schema version {version} is newer than this dapi-config supports "
                f"({LATEST_VERSION})",
            )
        row = conn.execute("SELECT COALESCE(MAX(revision), 0) FROM audit_log").fetchone()
        return replace(info, revision=int(row[0]))
    except connection.SQLITE_ERRORS as exc:
        if key is not None and is_not_a_database(exc):
            return replace(
                info,
                problem=f"cannot be decrypted with {_cipher.ENV_KEY} (made with another key, "
                "or damaged)",
            )
        return replace(info, problem=f"cannot be read ({exc})")
    finally:
        conn.close()


def _clean_stale_temps(directory: Path) -> None:
    """Remove temp files of backups that died (killed mid-copy) long enough ago."""
    cutoff = time.time() - STALE_TEMP_S
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if entry.name.startswith(".") and ".tmp" in entry.name:
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < cutoff:
                        entry.unlink()


def _check_reason(reason: str) -> None:
    if not _REASON_RE.match(reason):
        raise BackupError(f"backup reason {reason!r}: use lower-case letters, digits, '-', '.'")


def create_backup(
    state_path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    backup_dir: str | os.PathLike[str] | None = None,
    reason: str = MANUAL,
    cipher: StateCipher | None = None,
) -> BackupInfo:
    """Copy the live state file to a verified backup; returns what was written.

    ``out`` is a file path (replaced atomically) or a directory; by default the backup goes to
    ``backup_dir`` (``<state dir>/backups``) under a generated name. Safe while other threads
    and processes write. An encrypted state file (``cipher``; None for a plain one)
    gives a backup encrypted with the same key. Raises :class:`BackupError` (nothing left
    behind) when the state file is missing or damaged or the copy cannot be written (full disk,
    permissions).
    """
    state = Path(state_path)
    key = cipher
    _check_reason(reason)
    if not state.is_file():
        raise BackupError(f"{state}: no state file to back up")
    return write_backup(
        state,
        lambda tmp: _copy_snapshot(state, tmp, key),
        out=out,
        backup_dir=backup_dir or backup_dir_for(state),
        reason=reason,
        cipher=key,
    )


def write_backup(
    state: Path | str,
    fill: Callable[[Path], None],
    *,
    out: str | os.PathLike[str] | None,
    backup_dir: str | os.PathLike[str],
    reason: str,
    cipher: StateCipher | None = None,
    name_stem: str | None = None,
) -> BackupInfo:
    """The steps every backup goes through, whatever it copies: ``fill(tmp)`` writes a SQLite
    state file into the private temp file ``tmp``; it is checked (:func:`inspect_backup`),
    fsynced and renamed into place (``out``, or ``backup_dir`` under a generated name from
    ``name_stem``, by default the state file's stem). ``state`` names what is backed up in
    messages. Raises :class:`BackupError`; nothing is left behind then."""
    key = cipher
    _check_reason(reason)
    when = datetime.now(UTC)
    stem = Path(f"{name_stem}.db") if name_stem is not None else Path(state)
    if out is None:
        target = Path(backup_dir) / backup_name(stem, reason, when)
    else:
        target = Path(out)
        if target.is_dir():
            target = target / backup_name(stem, reason, when)
    directory = target.parent

    def verified(tmp: Path) -> BackupInfo:
        _failpoints.hit("backup.mid_copy")
        checked = inspect_backup(tmp, cipher=key)
        if not checked.ok:
            raise BackupError(
                f"the backup of {state} failed its check ({checked.problem}); nothing was "
                "kept. Run `dapi-config check`"
            )
        return checked

    try:
        make_durable_dir(directory)
        _clean_stale_temps(directory)
        info = stage_verified(
            target,
            fill,
            verified,
            before_rename=lambda: _failpoints.hit("backup.before_rename"),
        )
    except OSError as exc:
        raise BackupError(
            f"cannot write a backup in {directory}: {sqlite_error_message(exc)}"
        ) from None
    log.info(
        "backup of %s written to %s (%s, revision %d, %d bytes)",
        state,
        target,
        reason,
        info.revision,
        info.size,
    )
    return replace(info, path=target, created_at=when, reason=reason)


def backup_before(
    state_path: str | os.PathLike[str],
    reason: str,
    *,
    backup_dir: str | os.PathLike[str] | None = None,
    cipher: StateCipher | None = None,
    keep: int = DEFAULT_BACKUP_KEEP,
) -> BackupInfo | None:
    """The automatic backup before a risky operation (restore, schema change, bulk replace,
    legacy migration): ``pre-<reason>`` in ``<state dir>/backups``, keeping the newest
    ``keep`` of that reason (``API_BACKUP_KEEP``; 0 keeps all).

    Skipped (None) when the state file holds nothing yet -- no audit revision -- since there is
    nothing to lose. Raises :class:`BackupError` when the backup cannot be made: the caller
    should then not go ahead.
    """
    state = Path(state_path)
    key = cipher
    if _revision_of_live(state, key) == 0:
        return None
    tag = reason if reason.startswith("pre-") else f"pre-{reason}"
    info = create_backup(state, backup_dir=backup_dir, reason=tag, cipher=key)
    # Automatic backups follow the same retention as scheduled ones, per reason, so a busy
    # bulk-replace caller cannot fill the disk with them.
    prune_backups(backup_dir or backup_dir_for(state), state, keep, reasons=[tag])
    return info


def _revision_of_live(state: Path, key: StateCipher | None) -> int:
    """The newest audit revision of the live file (0 when missing, new or unreadable)."""
    if not state.is_file() or state.stat().st_size == 0:
        wal = Path(f"{state}-wal")
        if not (wal.exists() and wal.stat().st_size):
            return 0
    try:
        conn = _cipher.connect(str(state), key, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except connection.SQLITE_ERRORS:
        return 0
    try:
        row = conn.execute("SELECT COALESCE(MAX(revision), 0) FROM audit_log").fetchone()
        return int(row[0])
    except connection.SQLITE_ERRORS:
        return 0
    finally:
        conn.close()


def _make_snapshot_durable(state: Path) -> None:
    """fsync the ``-wal`` (every commit of the snapshot is in it or in the main file) and the
    state folder (a ``-wal`` that was never synced may not have a durable name yet)."""
    wal = Path(f"{state}-wal")
    with contextlib.suppress(FileNotFoundError):
        fsync_file(wal)
    fsync_directory(state.parent)


def _copy_snapshot(state: Path, tmp: Path, key: StateCipher | None) -> None:
    """One-step online copy of ``state`` into the empty file ``tmp`` (rollback-journal mode)."""
    try:
        src = _cipher.connect(str(state), key, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except connection.SQLITE_ERRORS as exc:
        raise BackupError(f"{state}: cannot open for backup: {sqlite_error_message(exc)}") from None
    try:
        dst = _cipher.connect(str(tmp), key, isolation_level=None)
        try:
            # The snapshot is fixed first, then made durable, then copied (see module doc).
            src.execute("BEGIN")
            src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            _make_snapshot_durable(state)
            # pages=-1: everything in one step under one read transaction (see module doc).
            src.backup(dst, pages=-1)
            src.execute("COMMIT")
            # The copied header says WAL; a backup must be one self-contained file.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except connection.SQLITE_ERRORS as exc:
        if is_not_a_database(exc):
            message = _cipher.unreadable_message(state, key)
            if message is not None:
                raise BackupError(f"cannot back up: {message}") from None
        raise BackupError(
            f"cannot back up {state}: {sqlite_error_message(exc)}; nothing was kept"
        ) from None
    finally:
        src.close()


def list_backups(
    backup_dir: str | os.PathLike[str],
    state_path: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
    cipher: StateCipher | None = None,
) -> list[BackupInfo]:
    """Backups in ``backup_dir`` (of ``state_path``'s file when given), newest first.

    With ``verify`` each one is checked (``problem`` set on damaged ones); otherwise only the
    file name and size are read.
    """
    directory = Path(backup_dir)
    key = cipher if verify else None
    stem = None if state_path is None else Path(state_path).stem
    found: list[BackupInfo] = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BackupError(f"{directory}: cannot list backups ({exc.strerror})") from None
    for entry in entries:
        match = _NAME_RE.match(entry.name)
        if not match or entry.name.startswith(".") or (stem is not None and match["stem"] != stem):
            continue
        try:
            if verify:
                found.append(inspect_backup(entry, cipher=key))
            else:
                created = datetime.strptime(match["ts"], _TS_FORMAT).replace(tzinfo=UTC)
                found.append(
                    BackupInfo(entry, created, entry.stat().st_size, 0, 0, match["reason"])
                )
        except (BackupError, OSError):
            continue  # removed by a concurrent prune while we listed
    found.sort(key=lambda b: b.created_at, reverse=True)
    return found


def newest_good_backup(
    backup_dir: str | os.PathLike[str],
    state_path: str | os.PathLike[str] | None = None,
    *,
    cipher: StateCipher | None = None,
) -> BackupInfo | None:
    """The newest backup that passes its check (older ones are tried in turn), or None.

    Only backups readable in the current encryption mode (``cipher``) count."""
    key = cipher
    for candidate in list_backups(backup_dir, state_path, verify=False):
        try:
            info = inspect_backup(candidate.path, cipher=key)
        except BackupError:
            continue
        if info.ok:
            return info
        log.warning("backup %s is unusable: %s", candidate.path, info.problem)
    return None


def prune_backups(
    backup_dir: str | os.PathLike[str],
    state_path: str | os.PathLike[str] | None,
    keep: int,
    *,
    reasons: Iterable[str] | None = None,
) -> list[Path]:
    """Delete all but the newest ``keep`` backups of each reason; returns the removed.

    ``reasons`` limits pruning to those reasons (default: every reason but ``manual``, which
    is pruned only when named). ``keep`` < 1 keeps everything.
    """
    if keep < 1:
        return []
    wanted = None if reasons is None else set(reasons)
    by_reason: dict[str, list[BackupInfo]] = {}
    for info in list_backups(backup_dir, state_path, verify=False):
        if (wanted is None and info.reason == MANUAL) or (
            wanted is not None and info.reason not in wanted
        ):
            continue
        by_reason.setdefault(info.reason, []).append(info)
    removed: list[Path] = []
    for infos in by_reason.values():
        for info in infos[keep:]:  # newest first
            with contextlib.suppress(FileNotFoundError):
                info.path.unlink()
                removed.append(info.path)
    if removed:
        with contextlib.suppress(OSError):
            fsync_directory(Path(backup_dir))
        log.info("pruned %d old backup(s) in %s", len(removed), backup_dir)
    return removed


class BackupScheduler(Periodic):
    """Runs ``take()`` (a ``scheduled`` backup, pruned to ``API_BACKUP_KEEP``) every
    ``interval`` seconds, whatever the backend.

    ``on_backup(info)`` runs after each successful backup (metrics). A failed backup is logged
    and retried at the next tick; it never stops the service.
    """

    def __init__(
        self,
        take: Callable[[], BackupInfo],
        *,
        interval: float = DEFAULT_BACKUP_INTERVAL_S,
        on_backup: Callable[[BackupInfo], None] | None = None,
    ) -> None:
        super().__init__(interval, name="dapi-config-backup")
        self.take = take
        self.on_backup = on_backup
        self.last: BackupInfo | None = None

    def run_once(self) -> BackupInfo | None:
        """Take one scheduled backup; None (logged) when it failed."""
        try:
            info = self.take()
        except DapiConfigError as exc:
            log.error("scheduled backup failed: %s", exc)
            return None
        self.last = info
        if self.on_backup is not None:
            try:
                self.on_backup(info)
            except Exception:
                log.exception("backup callback failed")
        return info
