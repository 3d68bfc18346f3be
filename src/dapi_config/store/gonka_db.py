"""The later predecessor's own SQLite state, ``gonka.db`` (its ``apiconfig`` SQLite store):
reading its rows as they are, and writing changes back for a rollback the way its own store
writes them. Deciding what to import or write back is :mod:`dapi_config.legacy.gonka_db`'s
job; this module only knows the file's tables.

Its tables: ``inference_nodes`` (``models_json``, ``hardware_json``; ``base_url`` and
``auth_token`` added later), ``kv_config`` (``key``, ``value_json``), ``seed_info`` (history:
one active row per type) and ``bls_dealer_openings`` (blobs). Older files lack the later
tables and columns; every one is optional except ``kv_config``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dapi_config._files import fsync_directory, fsync_file
from dapi_config.errors import ConfigError
from dapi_config.store._held_files import create_private
from dapi_config.store.backend import BlsDealerOpening


@dataclass
class PredecessorRows:
    """Everything a ``gonka.db`` holds, as plain rows."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    kv: dict[str, str] = field(default_factory=dict)
    #: The active ``seed_info`` rows (one per type), in insertion order: ``{type, seed,
    #: epoch_index, signature, claimed, is_active}``. The history (inactive rows: the binary
    #: re-inserted every seed each minute, hundreds of thousands of rows a year) is streamed
    #: by :func:`seed_history` instead of held here.
    seeds: list[dict[str, Any]] = field(default_factory=list)
    #: How many inactive ``seed_info`` rows the file holds.
    history_rows: int = 0
    openings: list[BlsDealerOpening] = field(default_factory=list)
    #: The file's tables (older files lack the later ones).
    tables: set[str] = field(default_factory=set)


def read_predecessor_db(path: Path) -> PredecessorRows:
    """Read ``path`` without changing it. Raises :class:`ConfigError` when it is missing, is
    no SQLite file, or is not the predecessor's (no ``kv_config`` table)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (the predecessor's gonka.db was expected)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open the predecessor's gonka.db: {exc}") from None
    try:
        return _read(conn, path)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot read the predecessor's gonka.db: {exc}") from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, path: Path) -> PredecessorRows:
    conn.row_factory = sqlite3.Row
    tables = {
        str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if "kv_config" not in tables:
        raise ConfigError(
            f"{path}: not the predecessor's gonka.db (it has no kv_config table); "
            "check API_SQLITE_PATH / --gonka-db. Nothing was imported."
        )
    rows = PredecessorRows(tables=tables)
    conn.execute("BEGIN")  # one consistent read of every table
    rows.kv = {
        str(r["key"]): str(r["value_json"])
        for r in conn.execute("SELECT key, value_json FROM kv_config ORDER BY key")
    }
    if "inference_nodes" in tables:
        # Ordered by id, as the predecessor's ReadNodes returned them.
        rows.nodes = [dict(r) for r in conn.execute("SELECT * FROM inference_nodes ORDER BY id")]
    if "seed_info" in tables:
        rows.seeds = [
            dict(r)
            for r in conn.execute(
                "SELECT type, seed, epoch_index, signature, claimed, is_active "
                "FROM seed_info WHERE is_active ORDER BY id"
            )
        ]
        rows.history_rows = int(
            conn.execute("SELECT COUNT(*) FROM seed_info WHERE NOT is_active").fetchone()[0]
        )
    if "bls_dealer_openings" in tables:
        rows.openings = [
            BlsDealerOpening(
                epoch_id=int(r["epoch_id"]) % 2**64,
                recipient_index=int(r["recipient_index"]),
                ciphertext_index=int(r["ciphertext_index"]),
                slot_index=int(r["slot_index"]),
                share_bytes=bytes(r["share_bytes"]),
                seed=bytes(r["seed"]),
            )
            for r in conn.execute(
                "SELECT epoch_id, recipient_index, ciphertext_index, slot_index, share_bytes, "
                "seed FROM bls_dealer_openings ORDER BY epoch_id, recipient_index, "
                "ciphertext_index"
            )
        ]
    conn.execute("COMMIT")
    return rows


#: Rows of seed history read (and imported) at a time: memory stays flat whatever the length.
HISTORY_BATCH = 5000


def seed_history(path: Path, batch: int = HISTORY_BATCH) -> Iterator[list[dict[str, Any]]]:
    """The inactive ``seed_info`` rows of ``path`` in insertion order, ``batch`` at a time, as
    ``{type, seed, epoch_index, signature, claimed}``. Raises :class:`ConfigError`."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open the predecessor's gonka.db: {exc}") from None
    try:
        conn.row_factory = sqlite3.Row
        cursor = conn.execute(
            "SELECT type, seed, epoch_index, signature, claimed FROM seed_info "
            "WHERE NOT is_active ORDER BY id"
        )
        while rows := cursor.fetchmany(batch):
            yield [dict(r) for r in rows]
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot read the predecessor's gonka.db: {exc}") from None
    finally:
        conn.close()


#: The node columns the predecessor's store writes (``UpsertInferenceNodes``), in its order.
NODE_COLUMNS = (
    "id",
    "host",
    "inference_segment",
    "inference_port",
    "poc_segment",
    "poc_port",
    "max_concurrent",
    "models_json",
    "hardware_json",
    "base_url",
    "auth_token",
)
#: Columns its later releases added to older files on start (``addColumnIfMissing``).
_ADDED_NODE_COLUMNS = ("base_url", "auth_token")
#: Its timestamp expression, so a row written here looks like one it wrote itself.
_GO_NOW = "(STRFTIME('%Y-%m-%d %H:%M:%f','now'))"
#: How long a write-back waits for the predecessor's own lock (its busy_timeout).
_BUSY_TIMEOUT_S = 5.0


@dataclass
class PredecessorChanges:
    """What a rollback writes into a ``gonka.db``: ``kv`` keys to set (``value_json`` as the
    Go store encodes it), node rows to upsert (``NODE_COLUMNS``) and ids to delete, and new
    active seeds by type (``{seed, epoch_index, signature, claimed}``)."""

    kv: dict[str, str] = field(default_factory=dict)
    upsert_nodes: list[dict[str, Any]] = field(default_factory=list)
    delete_nodes: list[str] = field(default_factory=list)
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.kv or self.upsert_nodes or self.delete_nodes or self.seeds)


def write_predecessor_db(path: Path, changes: PredecessorChanges, *, backup: Path) -> None:
    """Copy ``path`` to ``backup`` (a consistent online copy, 0600, synced), then apply
    ``changes`` in one transaction, as the predecessor's own store does: nodes upserted by id,
    ``kv_config`` upserted, a seed made active by deactivating the type's active row and
    inserting a new one (its history stays). Raises :class:`ConfigError` (nothing changed
    when the backup or the transaction fails)."""
    try:
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open the predecessor's gonka.db: {exc}") from None
    try:
        _backup(conn, path, backup)
        _apply(conn, changes)
    except sqlite3.OperationalError as exc:
        busy = "locked" in str(exc) or "busy" in str(exc)
        hint = " (is the predecessor's binary still running? stop it first)" if busy else ""
        raise ConfigError(
            f"{path}: cannot write the predecessor's gonka.db: {exc}{hint}; it was not changed"
        ) from None
    except sqlite3.Error as exc:
        raise ConfigError(
            f"{path}: cannot write the predecessor's gonka.db: {exc}; it was not changed"
        ) from None
    finally:
        conn.close()


def _backup(conn: sqlite3.Connection, path: Path, backup: Path) -> None:
    if backup.exists():
        raise sqlite3.OperationalError(f"the backup {backup} exists already")
    create_private(backup)  # 0600 before a byte is in it: it holds the worker key
    try:
        target = sqlite3.connect(backup)
        try:
            conn.backup(target)
        finally:
            target.close()
        fsync_file(backup)
        fsync_directory(backup.parent)
    except BaseException:
        backup.unlink(missing_ok=True)
        raise


def _apply(conn: sqlite3.Connection, changes: PredecessorChanges) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if changes.upsert_nodes or changes.delete_nodes:
            present = {str(r[1]) for r in conn.execute("PRAGMA table_info(inference_nodes)")}
            for column in _ADDED_NODE_COLUMNS:
                if column not in present:
                    conn.execute(
                        f"ALTER TABLE inference_nodes ADD COLUMN {column} TEXT NOT NULL DEFAULT ''"
                    )
            conn.executemany(
                "DELETE FROM inference_nodes WHERE id = ?", [(i,) for i in changes.delete_nodes]
            )
            updates = ", ".join(f"{c} = excluded.{c}" for c in NODE_COLUMNS[1:])
            conn.executemany(
                f"INSERT INTO inference_nodes ({', '.join(NODE_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in NODE_COLUMNS)}) "
                f"ON CONFLICT(id) DO UPDATE SET {updates}, updated_at = {_GO_NOW}",
                [tuple(row[c] for c in NODE_COLUMNS) for row in changes.upsert_nodes],
            )
        conn.executemany(
            "INSERT INTO kv_config(key, value_json) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
            f"SET value_json = excluded.value_json, updated_at = {_GO_NOW}",
            list(changes.kv.items()),
        )
        for kind, seed in changes.seeds.items():
            conn.execute(
                "UPDATE seed_info SET is_active = 0 WHERE type = ? AND is_active = 1", (kind,)
            )
            conn.execute(
                "INSERT INTO seed_info(type, seed, epoch_index, signature, claimed, is_active) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                (kind, seed["seed"], seed["epoch_index"], seed["signature"], seed["claimed"]),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
