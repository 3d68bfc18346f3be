"""Schema step 4: the audit trail's hash chain (SPEC §10, :mod:`dapi_config.store.chain`).

Each row gets a ``chain`` column; the rows already there are chained in revision order with
plain SHA-256 (the step runs without the master key) by :func:`backfill`. ``audit_checkpoint``
keeps the chain value of the newest row the retention deleted, so the rows kept still check
from there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dapi_config.store.chain import chain_rows

if TYPE_CHECKING:
    from dapi_config.store.migrations import StepSql

SQL = """
ALTER TABLE audit_log ADD COLUMN chain TEXT;
CREATE TABLE audit_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    chain TEXT NOT NULL,
    at TEXT NOT NULL
);
"""

#: The same step in PostgreSQL's DDL (the same text: nothing here differs).
PG_SQL = SQL

_BATCH = 5000


def backfill(sql: StepSql) -> None:
    """Chain the rows written before this step, oldest first, a batch at a time."""
    previous, after = "", 0
    while True:
        rows = sql.query(
            "SELECT revision, at, actor, action, target, old_value, new_value FROM audit_log "
            "WHERE revision > ? ORDER BY revision LIMIT ?",
            (after, _BATCH),
        )
        if not rows:
            return
        for chain, revision in chain_rows(rows, None, previous):
            sql.execute("UPDATE audit_log SET chain = ? WHERE revision = ?", (chain, revision))
            previous, after = chain, revision
