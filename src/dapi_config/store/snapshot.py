"""A whole state as rows: read in one consistent snapshot, written in one verified transaction.

What ``dapi-config state copy`` moves between backends, how a PostgreSQL state is backed up to
SQLite snapshot files (SPEC §13), and how every backend restores a backup (SPEC §10). Rows are
copied as stored: sealed secrets stay sealed under the master key they were sealed with.

A restore is a write like any other, through the live store in one durable transaction, so every
process and replica sees it at its next read and no process keeps an old file or an old WAL. It
replaces every state table but the audit trail, which only grows: the restore appends an entry
naming the backup and the revisions it undid (the rows after the backup's revision stay
readable), so revisions keep increasing and watchers wake. The API tokens stay as they are too:
a restore brings back configuration, never a revoked credential.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dapi_config import _failpoints
from dapi_config._files import copy_file, make_durable_dir, remove_with_companions
from dapi_config._logging import RESULT
from dapi_config.errors import BackupError, StateUnavailableError
from dapi_config.store import migrations
from dapi_config.store.backup import BackupInfo
from dapi_config.store.connection import Database, create_private_file
from dapi_config.store.queries import KEPT_ON_RESTORE, STATE_TABLES, StateQueries
from dapi_config.store.recovery import RestoreResult, restorable_backup
from dapi_config.store.sqlcipher import StateCipher

log = logging.getLogger("dapi_config.state")

Tables = dict[str, tuple[list[str], list[list[Any]]]]


@dataclass
class StateSnapshot:
    """Every state table's columns and rows, and the newest audit revision among them."""

    tables: Tables
    revision: int

    @property
    def head_chain(self) -> str | None:
        """The chain value of the newest audit row (None: no rows, or no chain)."""
        columns, rows = self.tables.get("audit_log", ([], []))
        if not rows or "chain" not in columns or "revision" not in columns:
            return None
        at, chained = columns.index("revision"), columns.index("chain")
        newest = max(rows, key=lambda row: int(row[at]))
        return None if newest[chained] is None else str(newest[chained])

    @property
    def counts(self) -> dict[str, int]:
        """Rows per table (with :attr:`revision`, what a written copy is verified by)."""
        return {table: len(rows) for table, (_, rows) in self.tables.items()}


def read_snapshot(store: StateQueries) -> StateSnapshot:
    """Every state table of ``store``, read in one consistent snapshot."""
    with store.snapshot():
        tables: Tables = {}
        for table in STATE_TABLES:
            columns, rows = store.dump_table(table)
            tables[table] = (columns, [list(r) for r in rows])
        return StateSnapshot(tables, store.latest_revision())


def write_snapshot(
    store: StateQueries, snapshot: StateSnapshot, *, where: str, rechain: bool = False
) -> None:
    """Replace everything in ``store`` with ``snapshot`` in one durable transaction, checked
    (rows per table, latest revision) before it commits. When ``store``'s own trail had gone
    further than the snapshot's (a forced copy onto a used state), one more entry marks the
    jump after its old latest revision: the revisions of a state never go back.

    ``rechain``: chain the copied trail under ``store``'s key (a copy to a state with a key of
    its own; a backup file keeps its rows' chain as it was, to be compared with the trail's).

    Raises :class:`StateUnavailableError` (nothing committed) when the check fails."""
    with store.transaction(durable=True):
        before = store.latest_revision()
        store.clear_state()
        for table in STATE_TABLES:
            columns, rows = snapshot.tables[table]
            store.load_table(table, columns, rows)
        store.finish_load()
        got = store.row_counts()
        if got != snapshot.counts or store.latest_revision() != snapshot.revision:
            raise StateUnavailableError(
                f"{where}: the copy does not match its source (rows {got} vs "
                f"{snapshot.counts}); nothing was written"
            )
        if rechain:  # the copied trail was chained under its source's key
            store.rechain_trail()
        if before > snapshot.revision:
            store.record_trail_jump(where, snapshot.revision, before)
            store.finish_load()


def restore_snapshot(store: StateQueries, snapshot: StateSnapshot, *, source: str) -> int:
    """Make ``snapshot`` the state of ``store`` in one durable transaction, keeping the trail
    (see the module doc); ``source`` names the backup in the restore's audit entry. Returns
    the restore's revision."""
    with store.transaction(durable=True):
        latest = store.latest_revision()
        # A state that never had a change (a new database the backup moves to) takes the
        # backup's trail: there is no history of its own to keep.
        adopt_trail = latest == 0
        store.clear_state(keep_trail=True)
        for index, table in enumerate(STATE_TABLES):
            if table not in KEPT_ON_RESTORE or adopt_trail:
                columns, rows = snapshot.tables[table]
                store.load_table(table, columns, rows)
            if index == len(STATE_TABLES) // 2:
                _failpoints.hit("restore.mid_copy")
        store.finish_load()
        if adopt_trail:  # the backup's trail, chained under its own state's key
            store.rechain_trail()
        return store.record_restore(source, snapshot.revision, latest, snapshot.head_chain)


def restore_from_backup(
    store: StateQueries,
    backup: str | os.PathLike[str],
    *,
    work_dir: Path,
    cipher: StateCipher | None,
    backup_before: Callable[[], BackupInfo | None],
) -> RestoreResult:
    """Restore ``backup`` (checked first) into ``store``; ``backup_before`` takes the
    ``pre-restore`` safety copy once the backup is known good and readable. A private copy of
    the backup is read (in ``work_dir``), so that bringing an older backup to the current
    schema leaves the backup itself as it was.

    Raises :class:`BackupError` (missing or damaged backup; nothing changed),
    :class:`SchemaTooNewError`, :class:`StateUnavailableError` (the state cannot be written).
    """
    info = restorable_backup(backup, cipher=cipher)
    why = "for a restore"
    with _private_copy(info, work_dir, why, "; the state was not changed") as work:
        try:
            snapshot = read_snapshot_file(work, cipher=cipher)
        except OSError as exc:
            raise BackupError(
                f"cannot read {info.path} {why}: {exc.strerror or exc}; the state was not changed"
            ) from None
    pre = backup_before()
    revision = restore_snapshot(store, snapshot, source=str(info.path))
    log.warning(
        "state %s restored from %s (taken %s, revision %d) as revision %d%s",
        store.path,
        info.path,
        info.created_at.isoformat(),
        info.revision,
        revision,
        f"; the previous state is in {pre.path}" if pre else "",
        extra=RESULT,
    )
    return RestoreResult(info, pre, None)


@contextlib.contextmanager
def opened_backup(
    backup: str | os.PathLike[str], *, work_dir: Path, cipher: StateCipher | None
) -> Iterator[StateQueries]:
    """The state a backup holds, to read (a restore's preview): checked first, then a private
    copy brought to the current schema, so the backup stays as it is; the copy is removed on
    exit. Raises :class:`BackupError` (missing or damaged backup), :class:`SchemaTooNewError`."""
    info = restorable_backup(backup, cipher=cipher)
    with _private_copy(info, work_dir, "for a preview") as work, _state_file(work, cipher) as store:
        yield store


@contextlib.contextmanager
def opened_scratch(*, work_dir: Path, cipher: StateCipher | None) -> Iterator[StateQueries]:
    """A new, empty private state file in ``work_dir`` (0600), to fill and read (the state as
    it was at a revision, rebuilt from the trail); removed on exit."""
    work = make_durable_dir(work_dir) / f".scratch-{os.getpid()}-{threading.get_ident()}.db"
    try:
        remove_with_companions(work)
        create_private_file(work)
        with _state_file(work, cipher) as store:
            yield store
    finally:
        remove_with_companions(work)


@contextlib.contextmanager
def _private_copy(
    info: BackupInfo, work_dir: Path, why: str, consequence: str = ""
) -> Iterator[Path]:
    """A private copy of the checked backup ``info`` in ``work_dir`` (0600), removed on exit:
    what is read, so that bringing it to the current schema leaves the backup as it was.
    Raises :class:`BackupError` when it cannot be made."""
    work = make_durable_dir(work_dir) / f".copy-{os.getpid()}-{threading.get_ident()}.db"
    try:
        try:
            remove_with_companions(work)
            create_private_file(work)
            copy_file(info.path, work)
        except OSError as exc:
            raise BackupError(
                f"cannot read {info.path} {why}: {exc.strerror or exc}{consequence}"
            ) from None
        yield work
    finally:
        remove_with_companions(work)


@contextlib.contextmanager
def _state_file(path: Path, cipher: StateCipher | None = None) -> Iterator[StateQueries]:
    """A private SQLite state file (a snapshot being filled, or a copy being read), brought to
    the current schema: no hot cache, no claim, no backup before the schema change."""
    db = Database(path, cipher=cipher)
    try:
        db.prepare_files()
        migrations.migrate(db)
        yield _FileQueries(db)
    finally:
        db.close()


class _FileQueries(StateQueries):
    def __init__(self, db: Database) -> None:
        self.db = db
        super().__init__()


def write_snapshot_file(snapshot: StateSnapshot, path: Path) -> None:
    """Make the empty file ``path`` a SQLite state holding ``snapshot``, as one
    self-contained file (rollback journal, no ``-wal``): what a backup file is."""
    with _state_file(path) as store:
        write_snapshot(store, snapshot, where=str(path))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def read_snapshot_file(path: Path, *, cipher: StateCipher | None = None) -> StateSnapshot:
    """The state held by the SQLite file ``path`` (brought to the current schema first:
    the caller hands a private copy when the file must stay as it is)."""
    with _state_file(path, cipher) as store:
        return read_snapshot(store)


__all__ = [
    "StateSnapshot",
    "Tables",
    "opened_backup",
    "read_snapshot",
    "read_snapshot_file",
    "restore_from_backup",
    "restore_snapshot",
    "write_snapshot",
    "write_snapshot_file",
]
