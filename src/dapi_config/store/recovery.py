"""Integrity check at open, automatic recovery from a backup, restore, and ``check``.

At open, :func:`recover_if_damaged` looks at the state file before the store uses it: the
header, then (through SQLite, which also replays a committed ``-wal``) ``PRAGMA quick_check``,
the application id and the schema version. A damaged file -- garbage, truncated, zeroed pages,
a failed check, or an empty file while backups exist (an empty file passes SQLite's own check)
-- is replaced by the newest good backup:

1. the backup is copied to ``<state>.restoring`` (temp file, fsync, check, rename);
2. the damaged file is moved aside with its companions, ``-shm`` and ``-wal`` first, into
   ``<state dir>/quarantine/<name>-<time>/`` (never deleted: a ``-wal`` left beside the restored
   file would be replayed into it and corrupt it);
3. ``<state>.restoring`` is renamed over the state file and the directory fsynced.

A crash anywhere in between leaves ``<state>.restoring`` in place, and the next open finishes
steps 2-3 before anything else. With no good backup, open stops with
:class:`StateCorruptError` saying what to do; the damaged file is left where it is.

:func:`replace_with_backup` gives a damaged or missing live file the swap above; a sound live
file is restored through the store in one write transaction (:mod:`.snapshot`), which keeps
the audit trail and every process's view of the file.

Encryption (:mod:`.sqlcipher`): a key problem is never taken for damage. With encryption on, a
plain file or a file the key does not open stops start-up with a message about the key; with it
off, a file marked encrypted (``<state>.encrypted``) stops start-up with a message saying how to
enable it. Only backups readable in the current mode are candidates for recovery.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dapi_config import _failpoints
from dapi_config._files import copy_file, fsync_directory, make_durable_dir, stage_verified
from dapi_config._logging import RESULT
from dapi_config.crypto import key_file_path
from dapi_config.errors import (
    BackupError,
    SchemaTooNewError,
    StateCorruptError,
    StateUnavailableError,
)
from dapi_config.store import connection, migrations
from dapi_config.store import sqlcipher as _cipher
from dapi_config.store.backup import (
    BackupInfo,
    backup_dir_for,
    inspect_backup,
    list_backups,
    newest_good_backup,
    read_header,
)
from dapi_config.store.connection import (
    APPLICATION_ID,
    BUSY_TIMEOUT_S,
    Database,
    is_not_a_database,
    sqlite_error_message,
)
from dapi_config.store.migrations import LATEST_VERSION
from dapi_config.store.sqlcipher import StateCipher

#: Seconds a recovery waits for the state to be free (another recovery finishing) before it
#: concludes that another process has it open.
CLAIM_WAIT_S = 3.0

log = logging.getLogger("dapi_config.recovery")

QUARANTINE_DIR_NAME = "quarantine"
COMPANIONS = ("-shm", "-wal")


@dataclass(frozen=True)
class RecoveryReport:
    """What automatic recovery did: the problem, the backup restored, where the bad file went."""

    state_path: Path
    problem: str
    restored: BackupInfo
    quarantine: Path | None

    def message(self) -> str:
        """The loud log line: what was damaged, what was restored, what was lost."""
        kept = f"kept in {self.quarantine}" if self.quarantine else "nothing to keep"
        return (
            f"STATE FILE DAMAGED: {self.state_path} ({self.problem}). Restored backup "
            f"{self.restored.path} taken {self.restored.created_at.isoformat()} at audit "
            f"revision {self.restored.revision}: every change after that backup is LOST. "
            f"Damaged file {kept}."
        )


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did."""

    restored: BackupInfo
    #: The backup of the live file taken first (None when the live file was damaged/missing).
    pre_restore: BackupInfo | None
    #: Where the damaged live file went (None when it was restored in place).
    quarantine: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "restored": self.restored.to_dict(),
            "pre_restore": None if self.pre_restore is None else self.pre_restore.to_dict(),
            "quarantine": None if self.quarantine is None else str(self.quarantine),
        }


def staged_path(state: Path) -> Path:
    """Where a verified copy waits before it is renamed over the state file."""
    return state.with_name(state.name + ".restoring")


def _companion(state: Path, suffix: str) -> Path:
    return Path(f"{state}{suffix}")


def _has_backups(backup_dir: Path, state: Path) -> bool:
    return bool(list_backups(backup_dir, state, verify=False))


def _is_damage(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    return (
        code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or "malformed" in text
        or "not a database" in text
    )


def _has_hot_journal(state: Path) -> bool:
    journal = _companion(state, "-journal")
    return journal.exists() and journal.stat().st_size > 0


def _roll_back_hot_journal(state: Path, key: StateCipher | None) -> None:
    """Let SQLite roll back a rollback journal left by a crash before the file is judged.

    A power cut while SQLite creates the file (or changes its journal mode) can leave the file
    grown but its new pages unwritten (zeros on many file systems) beside a hot journal that
    says what the file held before; the first read of any connection rolls it back. Judged
    before that, the file looks damaged although nothing was lost. Errors are left to the
    checks that follow."""
    try:
        conn = _cipher.connect(str(state), key, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except connection.SQLITE_ERRORS:
        return
    try:
        with contextlib.suppress(*connection.SQLITE_ERRORS):
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()


def diagnose(
    state_path: str | os.PathLike[str],
    backup_dir: str | os.PathLike[str],
    *,
    cipher: StateCipher | None = None,
) -> str | None:
    """What is wrong with the state file (None: sound, or missing/new and nothing to restore).

    Raises :class:`StateCorruptError` for a sound SQLite file that is not a dapi-config state
    file (left alone: the path is wrong, not the file), :class:`StateUnavailableError` when
    the file cannot be read for another reason (permissions, locked, I/O, a wrong or missing
    encryption key, a plain file while encryption is on).
    """
    state = Path(state_path)
    key = cipher
    backups = Path(backup_dir)
    wal = _companion(state, "-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    try:
        size = state.stat().st_size
        if size and _has_hot_journal(state):
            _roll_back_hot_journal(state, key)
            size = state.stat().st_size
    except FileNotFoundError:
        if wal_size:
            return "the state file is missing but its -wal is still there"
        return None
    except OSError as exc:
        raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
    if size == 0 and not wal_size:
        if _has_backups(backups, state):
            return "the state file is empty (0 bytes) although backups exist"
        return None
    if size:
        try:
            header = read_header(state)
        except OSError as exc:
            raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
        plain = header.startswith(_cipher.SQLITE_MAGIC)
        if key is None and (len(header) < 100 or not plain):
            if _cipher.marker_path(state).exists():
                raise StateUnavailableError(_cipher.not_enabled_message(state))
            return (
                "not an SQLite database (bad or truncated header; "
                f"{_cipher.maybe_encrypted_hint()})"
            )
        if key is not None and plain:
            raise StateUnavailableError(_cipher.not_encrypted_message(state))
        if len(header) < 100:
            return "truncated (shorter than one page)"
    try:
        conn = _cipher.connect(str(state), key, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except connection.SQLITE_ERRORS as exc:
        raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
    try:
        if key is not None and size:
            # A wrong key fails on page 1. Recovery must never replace a file because of a key
            # problem, and a damaged page 1 cannot be told apart from a wrong key: stop here.
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except connection.SQLITE_ERRORS as exc:
                if is_not_a_database(exc):
                    raise StateUnavailableError(_cipher.wrong_key_message(state)) from None
                raise
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            return "integrity check failed: " + "; ".join(rows[:3])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        tables = int(conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0])
    except connection.SQLITE_ERRORS as exc:
        if _is_damage(exc):
            return f"cannot be read ({exc})"
        raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
    finally:
        conn.close()
    if version == 0 and tables == 0:
        if _has_backups(backups, state):
            return "the state file holds no data although backups exist"
        return None
    if app_id != APPLICATION_ID:
        raise StateCorruptError(
            f"{state}: not a dapi-config state file (application_id {app_id:#x}); it was not "
            "changed. Point --state / API_STATE_DB_PATH at the right file"
        )
    return None


def hold_open_claim(state: Path) -> int:
    """Mark the state as open by this process until the returned descriptor is closed: a
    shared ``flock`` on the state's directory (the directory, not the file: a file replaced
    under a running process would take its claim with it). Waits while a recovery runs."""
    fd = os.open(state.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def exclusive_claim(state: Path, what: str) -> Iterator[None]:
    """Have the state to ourselves for ``what`` (replacing or converting the file): the
    exclusive ``flock`` that no open store (:func:`hold_open_claim`) in any process allows.
    Waits up to :data:`CLAIM_WAIT_S` (another recovery finishing), then raises
    :class:`StateUnavailableError`: a file in use is never replaced."""
    fd = os.open(state.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + CLAIM_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StateUnavailableError(
                        f"{state}: {what} needs the state file to itself, but another process "
                        "has it open (the service, or another command). Stop it and run the "
                        "command again; nothing was changed"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def quarantine(state_path: str | os.PathLike[str]) -> Path | None:
    """Move the state file and its ``-wal``/``-shm`` aside (never deleted); returns the folder.

    Companions go first: the main file left behind by a crash here is still the damaged file
    (and the staged copy makes the next open finish the job), while a ``-wal`` left beside a
    restored file would be replayed into it.
    """
    state = Path(state_path)
    present = [p for p in (*(_companion(state, s) for s in COMPANIONS), state) if p.exists()]
    if not present:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = state.parent / QUARANTINE_DIR_NAME / f"{state.name}-{stamp}"
    make_durable_dir(folder)
    for index, path in enumerate(present):
        os.replace(path, folder / path.name)
        if index == 0 and len(present) > 1:
            _failpoints.hit("recover.mid_quarantine")
    fsync_directory(folder)
    fsync_directory(state.parent)
    return folder


def _stage_copy(backup: BackupInfo, state: Path, key: StateCipher | None = None) -> None:
    """Copy ``backup`` to ``<state>.restoring``: temp file, fsync, check, rename."""

    def verified(tmp: Path) -> None:
        check = inspect_backup(tmp, cipher=key)
        if not check.ok:
            raise BackupError(f"{backup.path}: the copy failed its check ({check.problem})")

    try:
        stage_verified(staged_path(state), lambda tmp: copy_file(backup.path, tmp), verified)
    except OSError as exc:
        raise StateUnavailableError(
            f"{state}: cannot stage the backup copy: {sqlite_error_message(exc)}"
        ) from None


def finish_interrupted_swap(state_path: str | os.PathLike[str]) -> Path | None:
    """If a staged copy waits (a swap was interrupted), move the old files aside and rename it
    into place. Returns the quarantine folder used (None when there was nothing to finish)."""
    state = Path(state_path)
    staged = staged_path(state)
    if not staged.exists():
        return None
    folder = quarantine(state)
    _failpoints.hit("recover.before_swap")
    os.replace(staged, state)
    os.chmod(state, 0o600)
    fsync_directory(state.parent)
    return folder


def _swap_in(backup: BackupInfo, state: Path, key: StateCipher | None) -> Path | None:
    _stage_copy(backup, state, key)
    return finish_interrupted_swap(state)


def recovery_plan(
    state_path: str | os.PathLike[str],
    backup_dir: str | os.PathLike[str] | None = None,
    *,
    cipher: StateCipher | None = None,
) -> tuple[str, BackupInfo | None] | None:
    """What :func:`recover_if_damaged` would do, doing nothing (``recover --dry-run``): None
    when the file is sound; else the problem and the backup it would restore (None: there is
    no good one, and it would stop). Raises as :func:`diagnose`."""
    state = Path(state_path)
    backups = Path(backup_dir or backup_dir_for(state))
    if not state.parent.is_dir():
        return None
    if staged_path(state).exists():
        return "a restore was interrupted; it would be finished", None
    problem = diagnose(state, backups, cipher=cipher)
    if problem is None:
        return None
    return problem, newest_good_backup(backups, state, cipher=cipher)


def recover_if_damaged(
    state_path: str | os.PathLike[str],
    backup_dir: str | os.PathLike[str] | None = None,
    *,
    cipher: StateCipher | None = None,
) -> RecoveryReport | None:
    """The open-time check: finish an interrupted swap, then replace a damaged state file by
    the newest good backup. Returns what was done (None: the file was sound).

    Raises :class:`StateCorruptError` (the file is damaged and no good backup exists, or it is
    not a dapi-config file), :class:`StateUnavailableError` (cannot be read at all, or a key
    problem: see :func:`diagnose`).
    """
    state = Path(state_path)
    key = cipher
    backups = Path(backup_dir or backup_dir_for(state))
    if not state.parent.is_dir():
        return None  # a new state file in a new directory: nothing to check
    if not staged_path(state).exists() and diagnose(state, backups, cipher=key) is None:
        return None
    with exclusive_claim(state, "recovery of a damaged state file"):
        # Another process may have recovered while we waited for the lock.
        if staged_path(state).exists():
            finish_interrupted_swap(state)
            log.warning("finished an interrupted restore of %s", state)
        problem = diagnose(state, backups, cipher=key)
        if problem is None:
            return None
        good = newest_good_backup(backups, state, cipher=key)
        if good is None:
            raise StateCorruptError(
                f"{state} is damaged ({problem}) and {backups} holds no good backup; nothing "
                "was changed. To start again with an empty state, move the file and its -wal "
                "and -shm aside (keep them: `sqlite3 FILE .recover` may salvage rows); to "
                "restore a backup from elsewhere, run `dapi-config restore PATH`"
            )
        folder = _swap_in(good, state, key)
        report = RecoveryReport(state, problem, good, folder)
        log.critical(report.message())
        return report


def restorable_backup(
    backup_path: str | os.PathLike[str], *, cipher: StateCipher | None = None
) -> BackupInfo:
    """``backup_path`` checked for a restore. Raises :class:`BackupError` (missing or
    damaged), :class:`SchemaTooNewError` (from a newer dapi-config)."""
    info = inspect_backup(backup_path, cipher=cipher)
    if info.schema_version > LATEST_VERSION:
        raise SchemaTooNewError(str(info.path), info.schema_version, LATEST_VERSION)
    if not info.ok:
        raise BackupError(
            f"{info.path}: refusing to restore a damaged backup ({info.problem}); "
            "the state was not changed"
        )
    return info


def replace_with_backup(
    state_path: str | os.PathLike[str], backup: BackupInfo, *, cipher: StateCipher | None = None
) -> RestoreResult:
    """Replace a damaged or missing state file by a copy of the checked ``backup`` (see
    :func:`restorable_backup`), by a file swap that never happens under a process that has
    the state open; the old file goes to quarantine. A sound live file is restored through
    the store instead (:func:`dapi_config.store.snapshot.restore_from_backup`).

    Raises :class:`StateUnavailableError` (another process has the state open, or the copy
    cannot be written).
    """
    state = Path(state_path)
    key = cipher
    make_durable_dir(state.parent, mode=0o777)
    with exclusive_claim(state, "restoring over a damaged state file"):
        if staged_path(state).exists():
            finish_interrupted_swap(state)
        folder = _swap_in(backup, state, key)
    # A backup from an older schema is brought up to date like any file at open.
    db = Database(state, cipher=key)
    try:
        db.prepare_files()
        migrations.migrate(db)
    finally:
        db.close()
    log.warning(
        "state %s replaced by %s (taken %s, revision %d)",
        state,
        backup.path,
        backup.created_at.isoformat(),
        backup.revision,
        extra=RESULT,
    )
    return RestoreResult(backup, None, folder)


# --- check ------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """The findings of :func:`check_state`: ``problems`` empty means healthy."""

    #: The state file, or the PostgreSQL URL (no password).
    state_path: Path | str
    items: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "state_path": str(self.state_path),
            **self.items,
            "problems": list(self.problems),
        }


def check_state(
    state_path: str | os.PathLike[str],
    backup_dir: str | os.PathLike[str] | None = None,
    *,
    max_backup_age: float | None = None,
    cipher: StateCipher | None = None,
) -> CheckResult:
    """Report integrity, schema version, file permissions and backup freshness; changes nothing.

    ``max_backup_age`` (seconds): an older newest good backup is a problem; None skips the
    freshness problem (the age is still reported).
    """
    state = Path(state_path)
    backups = Path(backup_dir or backup_dir_for(state))
    result = CheckResult(state)
    key = cipher
    result.items["encryption"] = "none" if key is None else _cipher.SQLCIPHER
    if staged_path(state).exists():
        result.problems.append(
            f"an interrupted restore is pending ({staged_path(state)}); the next open finishes it"
        )
    if not state.exists():
        result.problems.append(f"{state}: the state file does not exist")
        return result
    try:
        problem = diagnose(state, backups, cipher=key)
    except StateUnavailableError as exc:
        problem = str(exc)
    result.items["integrity"] = "ok" if problem is None else problem
    if problem is not None:
        result.problems.append(f"{state}: {problem}")
    else:
        try:
            conn = _cipher.connect(str(state), key, timeout=BUSY_TIMEOUT_S)
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                kept = kept_from_the_predecessor(conn) if version else []
            finally:
                conn.close()
            if kept:
                result.items["kept_as_the_predecessor_accepted"] = kept
        except connection.SQLITE_ERRORS as exc:
            version = -1
            result.problems.append(f"{state}: {sqlite_error_message(exc)}")
        check_schema_version(result, state, version)
    modes: dict[str, str] = {}
    # The master key file (secrets at rest, SPEC §11) sits beside the state file.
    for path in (state, *(_companion(state, s) for s in COMPANIONS), key_file_path(state)):
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            modes[path.name] = f"{mode:04o}"
            if mode & 0o077:
                result.problems.append(
                    f"{path}: mode {mode:04o} lets others read it; run chmod 600 {path}"
                )
    result.items["permissions"] = modes
    check_backups(result, backups, state, max_backup_age=max_backup_age, cipher=key)
    return result


def kept_from_the_predecessor(conn: Any) -> list[str]:
    """What the legacy imports recorded as kept the way the predecessor accepted it (values
    the strict rules for new input refuse): not problems, but worth fixing some day."""
    kept: list[str] = []
    for (details,) in conn.execute("SELECT details FROM legacy_imports ORDER BY id").fetchall():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            kept.extend(json.loads(details).get("kept_as_the_predecessor_accepted") or [])
    return kept


def check_schema_version(result: CheckResult, where: str | Path, version: int) -> None:
    """Add the state's schema ``version`` (-1: unreadable) to ``result``: newer than this
    code is a problem, older means steps are pending."""
    result.items["schema_version"] = version
    result.items["supported_schema_version"] = LATEST_VERSION
    if version > LATEST_VERSION:
        result.problems.append(
            f"{where}: schema version {version} is newer than this dapi-config ({LATEST_VERSION})"
        )
    elif 0 <= version < LATEST_VERSION:
        result.items["pending_migrations"] = LATEST_VERSION - version


def check_backups(
    result: CheckResult,
    backup_dir: Path,
    state_path: str | os.PathLike[str],
    *,
    max_backup_age: float | None,
    cipher: StateCipher | None = None,
) -> None:
    """Add to ``result`` what the backups of ``state_path``'s file in ``backup_dir`` say:
    modes that let others read them, the newest good one and whether it is fresh enough."""
    backups, key = backup_dir, cipher
    # Backups hold the same data (and sealed secrets) as the state itself.
    for info in list_backups(backups, state_path, verify=False):
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(info.path.stat().st_mode)
            if mode & 0o077:
                result.problems.append(
                    f"{info.path}: mode {mode:04o} lets others read it; run chmod 600 {info.path}"
                )
    good = newest_good_backup(backups, state_path, cipher=key)
    if good is None:
        result.items["newest_backup"] = None
        result.problems.append(f"no good backup in {backups}; run `dapi-config backup`")
    else:
        age = good.age_seconds()
        result.items["newest_backup"] = good.to_dict()
        if max_backup_age is not None and age > max_backup_age:
            result.problems.append(
                f"the newest good backup ({good.path}) is {age / 3600:.1f} h old "
                f"(limit {max_backup_age / 3600:.1f} h); run `dapi-config backup`"
            )
