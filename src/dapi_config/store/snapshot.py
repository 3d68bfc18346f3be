"""A whole state as rows: read in one consistent snapshot, written in one verified transaction.

What ``dapi-config state copy`` moves between backends, and how a PostgreSQL state is backed
up to (and restored from) SQLite snapshot files (SPEC §13). Rows are copied as stored: sealed
secrets stay sealed under the master key they were sealed with.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dapi_config.errors import StateUnavailableError
from dapi_config.store.queries import STATE_TABLES, StateQueries
from dapi_config.store.sqlite import StateStore

log = logging.getLogger("dapi_config.state")

Tables = dict[str, tuple[list[str], list[list[Any]]]]


@dataclass
class StateSnapshot:
    """Every state table's columns and rows, and the newest audit revision among them."""

    tables: Tables
    revision: int

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


def write_snapshot(store: StateQueries, snapshot: StateSnapshot, *, where: str) -> None:
    """Replace everything in ``store`` with ``snapshot`` in one durable transaction, checked
    (rows per table, latest revision) before it commits.

    Raises :class:`StateUnavailableError` (nothing committed) when the check fails."""
    with store.transaction(durable=True):
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


def write_snapshot_file(snapshot: StateSnapshot, path: Path) -> None:
    """Make the empty file ``path`` a SQLite state holding ``snapshot``, as one
    self-contained file (rollback journal, no ``-wal``): what a backup file is."""
    store = StateStore.open(path, recover=False, cipher=None, before_schema_change=_no_backup)
    try:
        write_snapshot(store, snapshot, where=str(path))
    finally:
        store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def read_snapshot_file(path: Path) -> StateSnapshot:
    """The state held by the SQLite file ``path`` (brought to the current schema first:
    the caller hands a private copy when the file must stay as it is)."""
    store = StateStore.open(path, recover=False, cipher=None, before_schema_change=_no_backup)
    try:
        return read_snapshot(store)
    finally:
        store.close()


def _no_backup(current: int, target: int) -> None:
    """A snapshot file being filled, or a private copy being read, needs no backup of its own."""


__all__ = [
    "StateSnapshot",
    "Tables",
    "read_snapshot",
    "read_snapshot_file",
    "write_snapshot",
    "write_snapshot_file",
]
