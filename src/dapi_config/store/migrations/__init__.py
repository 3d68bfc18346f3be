"""Numbered schema steps for the state file.

Each step runs in its own ``BEGIN IMMEDIATE`` transaction together with its record in
``schema_migrations`` and the ``PRAGMA user_version`` bump, so a crash leaves the file either
before or after a whole step. A file whose ``user_version`` is greater than the newest step here
was written by a newer dapi-config: opening it raises :class:`SchemaTooNewError` and changes
nothing.

To add a step: append ``Migration(N, "what it does", SQL)`` to :data:`MIGRATIONS` (never edit a
released step).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from dapi_config.errors import SchemaTooNewError, StateCorruptError, StateUnavailableError
from dapi_config.store import connection
from dapi_config.store.connection import APPLICATION_ID, Database
from dapi_config.store.migrations import (
    m0001_initial,
    m0002_predecessor_fields,
    m0003_api_tokens,
    m0004_audit_chain,
)


class StepSql(Protocol):
    """What a step's Python part works with, in either dialect (``?`` placeholders)."""

    def query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: tuple[Any, ...]) -> None: ...


class _SqliteStepSql:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        self._conn.execute(sql, params)


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One schema step: ``version`` is its number, ``script`` its SQL."""

    version: int
    name: str
    script: str
    #: The same step in PostgreSQL's DDL (see :mod:`dapi_config.store.postgres`).
    postgres_script: str
    #: What SQL alone cannot do (hashing rows), run after the script in the same transaction.
    backfill: Callable[[StepSql], None] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema (the proposal's tables, audit, keys, bookkeeping)",
        m0001_initial.SQL,
        m0001_initial.PG_SQL,
    ),
    Migration(
        2,
        "predecessor fields: node base_url/auth_token/url/extra, seed and plan extra, "
        "gonka.db kv rows and BLS dealer openings",
        m0002_predecessor_fields.SQL,
        m0002_predecessor_fields.PG_SQL,
    ),
    Migration(
        3,
        "scoped API tokens (their SHA-256, role and times)",
        m0003_api_tokens.SQL,
        m0003_api_tokens.PG_SQL,
    ),
    Migration(
        4,
        "the audit trail's hash chain (existing rows chained with SHA-256) and its checkpoint",
        m0004_audit_chain.SQL,
        m0004_audit_chain.PG_SQL,
        m0004_audit_chain.backfill,
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(db: Database) -> int:
    """The file's ``PRAGMA user_version`` (0 for a new file)."""
    return int(db.query_one("PRAGMA user_version")[0])


def application_id(db: Database) -> int:
    """The file's ``PRAGMA application_id`` (0 for a new or foreign file)."""
    return int(db.query_one("PRAGMA application_id")[0])


def pending(db: Database) -> list[Migration]:
    """Steps not yet applied to ``db``; raises if the file is newer than this code."""
    current = schema_version(db)
    if current > LATEST_VERSION:
        raise SchemaTooNewError(str(db.path), current, LATEST_VERSION)
    return [m for m in MIGRATIONS if m.version > current]


def preflight(db: Database) -> None:
    """Refuse a foreign or too-new file before anything (even the journal mode) is changed.

    Only a positive identification refuses: when the file cannot be inspected read-only, the
    normal open reports the problem instead.
    """
    try:
        if db.path.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    try:
        conn = db.open_readonly()
    except StateUnavailableError:
        return
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        objects = int(conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0])
    except connection.SQLITE_ERRORS:
        return
    finally:
        conn.close()
    if app_id != APPLICATION_ID and (version or objects):
        raise StateCorruptError(
            f"{db.path}: not a dapi-config state file (application_id {app_id:#x}); "
            "point --state / API_STATE_DB_PATH at the right file. It was not changed."
        )
    if version > LATEST_VERSION:
        raise SchemaTooNewError(str(db.path), version, LATEST_VERSION)


def migrate(db: Database, before_step: Callable[[int, int], None] | None = None) -> list[int]:
    """Apply every pending step in order; returns the versions applied.

    ``before_step(current, target)`` runs before the first step on a file that already holds
    data (the backup hook: a schema change is a risky operation).
    """
    steps = pending(db)
    if not steps:
        _check_application_id(db)
        return []
    current = schema_version(db)
    if current > 0:
        _check_application_id(db)
        if before_step is not None:
            before_step(current, steps[-1].version)
    applied: list[int] = []
    for step in steps:
        with db.transaction():
            conn = db.connection()
            # A concurrent opener may have applied this step while we waited for the lock.
            if schema_version(db) >= step.version:
                continue
            log.info("applying state schema step %d: %s", step.version, step.name)
            for statement in _split(step.script):
                conn.execute(statement)
            if step.backfill is not None:
                step.backfill(_SqliteStepSql(conn))
            conn.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, datetime.now(UTC).isoformat()),
            )
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={step.version}")
        applied.append(step.version)
    return applied


def _check_application_id(db: Database) -> None:
    found = application_id(db)
    if found != APPLICATION_ID:
        raise StateCorruptError(
            f"{db.path}: not a dapi-config state file (application_id {found:#x}); "
            "point --state / API_STATE_DB_PATH at the right file"
        )


def _split(script: str) -> list[str]:
    """Split a migration script into statements (complete_statement knows about quotes)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
