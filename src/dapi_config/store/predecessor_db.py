"""Reading the later predecessor's own SQLite state, ``gonka.db`` (its ``apiconfig`` SQLite
store): the rows as they are, read-only. Checking and importing them is
:mod:`dapi_config.legacy.gonka_db`'s job; this module only knows the file's tables.

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

from dapi_config.errors import ConfigError
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
    rows = PredecessorRows()
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
