"""The SQLite backend: :class:`SqliteStore`, the state in one file.

The statements themselves are shared with the PostgreSQL backend (:mod:`.queries`); this module
opens, migrates, recovers and backs up the file, and keeps the hot values.

Hot values (height, current node version) are cached in memory. A read checks that nobody (no
thread, no process) committed since the cache was filled by comparing the 48-byte WAL-index
header in the ``-shm`` file with the one recorded before the last refresh (``_wal_index``
explains why that is exact); where the header cannot be used, by ``PRAGMA data_version`` plus a
count of this process's own commits. Writers never put values into the cache: a refresh reads
them from SQL after recording its proof, so the cache cannot go back in time.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from dapi_config._files import atomic_write, sqlite_family
from dapi_config.errors import StateTimeoutError, StateUnavailableError
from dapi_config.settings import AuditRetention
from dapi_config.store import backup as _backup
from dapi_config.store import connection, migrations
from dapi_config.store import recovery as _recovery
from dapi_config.store import sqlcipher as _cipher
from dapi_config.store._wal_index import HEADER_SIZE, WalIndex, open_wal_index
from dapi_config.store.backend import AUDIT_PAGE_MAX
from dapi_config.store.backup import BackupInfo, backup_dir_for, create_backup, read_header
from dapi_config.store.connection import Database, Durability, sqlite_error_message
from dapi_config.store.queries import (
    AUDIT_PRUNE_BATCH,
    AUDIT_PRUNE_EVERY,
    HEIGHT,
    KEY_PARAMS_SECRET,
    NODE_VERSION,
    StateQueries,
    current_actor,
)
from dapi_config.store.recovery import (
    CheckResult,
    RestoreResult,
    diagnose,
    hold_open_claim,
    recover_if_damaged,
    restorable_backup,
    staged_path,
)
from dapi_config.store.snapshot import opened_backup, opened_scratch, restore_from_backup
from dapi_config.store.sqlcipher import StateCipher

log = logging.getLogger("dapi_config.state")

__all__ = [
    "AUDIT_PAGE_MAX",
    "AUDIT_PRUNE_BATCH",
    "AUDIT_PRUNE_EVERY",
    "HEIGHT",
    "KEY_PARAMS_SECRET",
    "NODE_VERSION",
    "SqliteStore",
    "StateStore",
    "current_actor",
    "restore_state_file",
]


class _HotCache:
    """Height and node version, with the proof that they are current.

    Everything here is read and written under ``lock``. A refresh records the proof first and
    reads the values from SQL second, so the values are never older than the proof says, and
    refreshes are serialised, so the values never go back in time. The proof is header copy 1
    of the WAL-index (see :mod:`._wal_index`), or with the fallback, this thread's
    ``(connection, PRAGMA data_version, local commit count)``.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: tuple[int, str] = (0, "")
        #: Header copy 1 as recorded before the values were read (None: refresh first).
        self.proof: bytes | None = None
        #: Read-only map of the WAL-index header; None = use the ``data_version`` fallback.
        #: Only read while the store is open: our connections' locks keep the file live.
        self.shm: mmap.mmap | None = None
        self.wal_index: WalIndex | None = None
        #: Commits through this process's Database: ``data_version`` ignores a connection's own.
        self.local_commits = 0
        #: Fallback proof per thread: (id(connection), data_version, local_commits).
        self.local = threading.local()

    def renew_lock(self) -> None:
        """In a forked child: a lock held by a parent thread would never be released."""
        self.lock = threading.Lock()


_HOT_CACHES: weakref.WeakSet[_HotCache] = weakref.WeakSet()


def _forget_maps_after_fork() -> None:
    # A forked child holds none of the parent's locks, so its map of -shm could outlive the file
    # (see _wal_index); the child's stores use data_version on their own fresh connections.
    for hot in list(_HOT_CACHES):
        hot.lock = threading.Lock()
        hot.shm = hot.wal_index = None


os.register_at_fork(after_in_child=_forget_maps_after_fork)


def _sync_marker(path: Path, key: StateCipher | None) -> None:
    """Keep ``<state>.encrypted`` in step with a file that just opened fine: present for an
    encrypted file (so a later start without the key says so), absent for a plain one (so real
    damage is not reported as a missing key)."""
    marker = _cipher.marker_path(path)
    try:
        if key is not None and not marker.exists():
            atomic_write(marker, _cipher.MARKER_TEXT)
        elif key is None and marker.exists() and _cipher.has_plain_header(path):
            marker.unlink()
    except OSError as exc:  # the marker is a convenience; the state itself is fine
        log.warning("cannot update %s: %s", marker, exc.strerror)


class SqliteStore(StateQueries):
    """The dynamic state in one SQLite file.

    An open store holds a claim on its file (:func:`.recovery.hold_open_claim`): while any
    process has it open, no recovery or conversion replaces the file."""

    db: Database
    _claim: int | None = None

    def __init__(
        self,
        db: Database,
        *,
        default_actor: str = "library",
        audit_retention: AuditRetention | None = None,
    ) -> None:
        self.db = db
        super().__init__(default_actor=default_actor, audit_retention=audit_retention)
        self._hot = _HotCache()
        db.add_fork_hook(self._hot.renew_lock)
        self._load_hot()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "full",
        default_actor: str = "library",
        audit_retention: AuditRetention | None = None,
        before_schema_change: Callable[[int, int], None] | None = None,
        on_connect: Callable[[sqlite3.Connection], None] | None = None,
        recover: bool = True,
        backup_dir: str | os.PathLike[str] | None = None,
        cipher: StateCipher | None = None,
        read_only: bool = False,
    ) -> SqliteStore:
        """Check, open (creating if needed, 0600) and migrate the state file at ``path``.

        With ``recover`` (the default) a damaged file is moved aside and the newest good backup
        in ``backup_dir`` (default ``<state dir>/backups``) restored first (see
        :mod:`.recovery`). Before a schema change on a file holding data, a backup is taken
        (``before_schema_change`` replaces that hook).
        Raises :class:`SchemaTooNewError` for a file from a newer dapi-config,
        :class:`StateCorruptError` for a damaged file with no good backup,
        :class:`StateUnavailableError` when the file cannot be opened or is not a state file,
        :class:`BackupError` when the backup before a schema change fails.
        ``read_only``: for commands that only look: the file must exist and be current; it is
        never created, recovered, migrated or marked (:class:`StateUnavailableError` instead).
        ``cipher``: the key of an encrypted file (None: plain; default: from
        ``API_STATE_ENCRYPTION``/``API_STATE_KEY``, see :mod:`.cipher`); a wrong or missing key
        raises :class:`StateUnavailableError`, a bad setting :class:`ConfigError`.
        """
        key = cipher
        if read_only:
            return cls._open_read_only(Path(path), key, default_actor, audit_retention)
        backups = Path(backup_dir) if backup_dir is not None else backup_dir_for(path)
        if recover:
            recover_if_damaged(path, backups, cipher=key)
        if before_schema_change is None:

            def before_schema_change(current: int, target: int) -> None:
                create_backup(path, backup_dir=backups, reason=f"pre-schema-v{target}", cipher=key)

        db = Database(
            path, durability=durability, on_connect=on_connect, cipher=key, queue_writers=True
        )
        migrations.preflight(db)
        try:
            db.prepare_files()
        except OSError as exc:
            raise StateUnavailableError(f"{db.path}: {sqlite_error_message(exc)}") from None
        claim = hold_open_claim(db.path)
        try:
            migrations.migrate(db, before_schema_change)
            store = cls(db, default_actor=default_actor, audit_retention=audit_retention)
            store._claim = claim
            _sync_marker(db.path, key)
            return store
        except BaseException:
            db.close()
            os.close(claim)
            raise

    @classmethod
    def _open_read_only(
        cls,
        path: Path,
        key: StateCipher | None,
        default_actor: str,
        audit_retention: AuditRetention | None,
    ) -> SqliteStore:
        """For commands that only look: never create, recover, migrate or mark the file."""
        if not path.is_file():
            raise StateUnavailableError(
                f"{path}: no state file here (nothing was created). Check --state / "
                "API_STATE_DB_PATH, or create it: `dapi-config init` (a new node), "
                "`dapi-config migrate` (a predecessor's config) or `dapi-config serve`"
            )
        db = Database(path, cipher=key)
        migrations.preflight(db)
        claim = hold_open_claim(path)
        try:
            steps = migrations.pending(db)
            if steps:
                raise StateUnavailableError(
                    f"{path}: its schema (version {steps[0].version - 1}) is older than this "
                    f"dapi-config's ({steps[-1].version}); the service or a command that writes "
                    "upgrades it (after a backup). It was not changed"
                )
            store = cls(db, default_actor=default_actor, audit_retention=audit_retention)
            store._claim = claim
            return store
        except BaseException:
            db.close()
            os.close(claim)
            raise

    def close(self) -> None:
        """Close every connection of this process, and give up its claim on the file (so
        that a recovery may replace it)."""
        hot = self._hot
        with hot.lock:
            # No reader touches the map once the connections (and their locks) are gone.
            hot.shm = None
            wal_index, hot.wal_index = hot.wal_index, None
        self.db.close()
        if wal_index is not None:
            wal_index.release()
        claim, self._claim = self._claim, None
        if claim is not None:
            os.close(claim)

    # --- the hot cache ----------------------------------------------------------------------

    def _data_version(self) -> int:
        return int(self.db.query_one("PRAGMA data_version")[0])

    def _load_hot(self) -> None:
        hot = self._hot
        _HOT_CACHES.add(hot)
        # The connection has read the file (migrations), so it holds its locks and the WAL-index
        # exists; map it, or use the fallback when it cannot be trusted.
        hot.wal_index = open_wal_index(self.db.path, self.db.connection())
        hot.shm = None if hot.wal_index is None else hot.wal_index.view
        self.db.add_commit_hook(self._note_local_commit)
        self._refresh_hot()

    @property
    def hot_check(self) -> Literal["wal-index", "data_version"]:
        """How hot reads detect other writers' commits (the WAL-index header, or the fallback)."""
        return "wal-index" if self._hot.shm is not None else "data_version"

    def _note_local_commit(self) -> None:
        hot = self._hot
        with hot.lock:
            hot.local_commits += 1

    def hot_values(self) -> tuple[int, str]:
        """(height, current node version), from memory unless someone committed since.

        Costs one 48-byte compare with the WAL-index header when it is mapped; else one
        ``PRAGMA data_version``. Raises :class:`StateUnavailableError` when a needed refresh
        cannot read the file (or the store is closed).
        """
        if self.db.in_transaction:
            # Inside a transaction the caller must see its own uncommitted writes.
            return self._read_hot()
        hot = self._hot
        lock = hot.lock
        lock.acquire()  # not ``with``: this is the hottest read, and the protocol costs ~70 ns
        try:
            shm = hot.shm
            if shm is not None and shm[:HEADER_SIZE] == hot.proof:
                return hot.values
        finally:
            lock.release()
        if shm is not None:
            return self._refresh_hot()
        return self._hot_values_by_data_version()

    def _hot_values_by_data_version(self) -> tuple[int, str]:
        hot = self._hot
        conn = self.db.connection()
        seen = getattr(hot.local, "seen", None)
        try:
            dv = conn.execute("PRAGMA data_version").fetchone()[0]
        except connection.SQLITE_ERRORS as exc:
            # The file became unusable: serve the last committed values we know.
            if seen is not None:
                return hot.values
            raise StateUnavailableError(f"{self.path}: {sqlite_error_message(exc)}") from None
        with hot.lock:
            if seen == (id(conn), dv, hot.local_commits):
                return hot.values
        return self._refresh_hot()

    def _refresh_hot(self) -> tuple[int, str]:
        hot = self._hot
        with hot.lock:
            shm = hot.shm
            if shm is not None:
                proof = shm[:HEADER_SIZE]
                hot.values = self._read_hot()
                hot.proof = proof
                return hot.values
            conn = self.db.connection()
            commits = hot.local_commits
            dv = self._data_version()
            hot.values = self._read_hot()
            hot.local.seen = (id(conn), dv, commits)
            return hot.values

    def schema_version(self) -> int:
        """The applied schema version."""
        return migrations.schema_version(self.db)

    def probe(self) -> None:
        """Read the state once, after what earlier reads found: a file a read or write found
        damaged stays unusable (the next start recovers it from a backup), and a header that
        is not SQLite's any more is damage too. Raises :class:`StateUnavailableError`."""
        if self.db.damage is not None:
            raise StateUnavailableError(
                f"{self.path}: {self.db.damage}; a restart recovers it from the newest good backup"
            )
        if self.cipher is None:
            try:
                header = read_header(self.db.path)
            except OSError:
                header = _backup.SQLITE_MAGIC  # missing or unreadable: the checks below say
            if not header.startswith(_backup.SQLITE_MAGIC):
                self.db.damage = "the state file is damaged (its header is not SQLite's)"
                raise StateUnavailableError(f"{self.path}: {self.db.damage}")
        super().probe()

    def quick_check(self, *, time_limit: float | None = None) -> list[str]:
        """``PRAGMA quick_check`` problems (empty when the file is sound), on this thread's
        read connection (writers go on meanwhile). Problems found mark the file damaged:
        readiness fails and writes are refused until a restart recovers it.

        ``time_limit`` (seconds): past it the check is abandoned with
        :class:`StateTimeoutError` (a huge file, a slow disk: inconclusive, not damage)."""
        conn = self.db.connection()
        if time_limit is not None:
            deadline = time.monotonic() + time_limit
            conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            rows = self.db.query_all("PRAGMA quick_check")
        except StateUnavailableError as exc:
            if time_limit is not None and "interrupted" in str(exc):
                raise StateTimeoutError(
                    f"{self.path}: the integrity check did not finish within {time_limit:g} s"
                ) from None
            raise
        finally:
            if time_limit is not None:
                conn.set_progress_handler(None, 0)
        problems = [] if [r[0] for r in rows] == ["ok"] else [str(r[0]) for r in rows]
        if problems:
            self.db.damage = f"the integrity check found damage ({problems[0]})"
        return problems

    # --- backups and recovery (SPEC §10) -------------------------------------------------

    supports_backups: ClassVar[bool] = True
    file_backed: ClassVar[bool] = True

    @property
    def cipher(self) -> StateCipher | None:
        """The key the file was opened with (None: plain); backups and checks use it."""
        return self.db.cipher

    @property
    def backup_dir(self) -> Path:
        """``<state dir>/backups``."""
        return backup_dir_for(self.db.path)

    def backup(self, out: str | os.PathLike[str] | None, *, reason: str) -> BackupInfo:
        """A verified online backup (see :func:`.backup.create_backup`)."""
        return create_backup(
            self.db.path, out=out, backup_dir=self.backup_dir, reason=reason, cipher=self.cipher
        )

    def backup_before(self, reason: str, *, keep: int) -> BackupInfo | None:
        """The automatic ``pre-<reason>`` backup (see :func:`.backup.backup_before`)."""
        return _backup.backup_before(
            self.db.path, reason, backup_dir=self.backup_dir, cipher=self.cipher, keep=keep
        )

    def own_files(self) -> list[Path]:
        """The state file, its companions, its encryption marker and every backup."""
        backups = [b.path for b in self.list_backups(verify=False)]
        return [*sqlite_family(self.db.path), _cipher.marker_path(self.db.path), *backups]

    def kept_backup(self, reason: str, *, keep: int) -> BackupInfo:
        """A backup in :attr:`backup_dir`, then the oldest beyond ``keep`` of that reason
        pruned (``keep`` < 1 keeps all)."""
        info = self.backup(None, reason=reason)
        _backup.prune_backups(self.backup_dir, self.db.path, keep, reasons=[reason])
        return info

    def list_backups(self, *, verify: bool = True) -> list[BackupInfo]:
        """Backups of this file, newest first, each checked (``verify``; else only named)."""
        return _backup.list_backups(
            self.backup_dir, self.db.path, verify=verify, cipher=self.cipher
        )

    def opened_backup(
        self, backup: str | os.PathLike[str]
    ) -> contextlib.AbstractContextManager[StateQueries]:
        """The state ``backup`` holds, to read (see :func:`.snapshot.opened_backup`)."""
        return opened_backup(backup, work_dir=self.backup_dir, cipher=self.cipher)

    def opened_scratch(self) -> contextlib.AbstractContextManager[StateQueries]:
        """A new, empty private state to fill (see :func:`.snapshot.opened_scratch`)."""
        return opened_scratch(work_dir=self.backup_dir, cipher=self.cipher)

    def restore_backup(self, backup: str | os.PathLike[str]) -> RestoreResult:
        """Make ``backup`` the state, in one transaction that keeps the audit trail, after a
        ``pre-restore`` backup (see :func:`.snapshot.restore_from_backup`)."""
        return restore_from_backup(
            self,
            backup,
            work_dir=self.backup_dir,
            cipher=self.cipher,
            backup_before=lambda: self.backup_before("restore", keep=0),
        )

    def check(self, *, max_backup_age: float | None = None) -> CheckResult:
        """Integrity, schema, permissions and backup freshness (see :mod:`.recovery`)."""
        return _recovery.check_state(
            self.db.path, self.backup_dir, max_backup_age=max_backup_age, cipher=self.cipher
        )


def restore_state_file(
    state_path: str | os.PathLike[str],
    backup: str | os.PathLike[str],
    *,
    cipher: StateCipher | None = None,
) -> RestoreResult:
    """Restore ``backup`` into the state file at ``state_path`` without an open manager
    (``dapi-config restore``, which must also work when the live file is beyond use): a sound
    file through :meth:`SqliteStore.restore_backup` (services that have it open see the
    restored state at their next read), a damaged or missing one by a file swap
    (:func:`.recovery.replace_with_backup`).

    Raises :class:`BackupError` (missing or damaged backup; nothing changed),
    :class:`SchemaTooNewError`, :class:`StateUnavailableError`.
    """
    state = Path(state_path)
    info = restorable_backup(backup, cipher=cipher)
    sound = (
        not staged_path(state).exists()
        and state.is_file()
        and state.stat().st_size > 0
        and diagnose(state, backup_dir_for(state), cipher=cipher) is None
    )
    if not sound:
        return _recovery.replace_with_backup(state, info, cipher=cipher)
    store = SqliteStore.open(state, recover=False, cipher=cipher)
    try:
        return store.restore_backup(info.path)
    finally:
        store.close()


#: The name :class:`SqliteStore` had before 0.3 (every backend now says what it stores in):
#: kept so that code importing it keeps working; new code uses :class:`SqliteStore`.
StateStore = SqliteStore
