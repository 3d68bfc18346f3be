"""Every statement on state and audit rows that both backends share.

:class:`StateQueries` is the only place that knows table and column names; the SQLite store
(:mod:`.sqlite`) and the PostgreSQL store (:mod:`.postgres`) add how they connect, migrate,
cache the hot values and back up. The statements are written once, in the SQL the two dialects
share (``?`` placeholders, ``ON CONFLICT`` upserts, ``RETURNING``); a backend's
:class:`SqlDatabase` runs them. Write methods must run inside :meth:`StateQueries.transaction`
(the manager opens one per public write); each appends its audit row in that same transaction,
so a change and its record commit together.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import json
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, SecretStr

from dapi_config._validation import with_admin_state_of
from dapi_config.access import Role, TokenInfo
from dapi_config.crypto import WORKER_KEY_SECRET
from dapi_config.errors import (
    DuplicateNodeError,
    MasterKeyError,
    NodeNotFoundError,
    TokenExistsError,
    TokenNotFoundError,
)
from dapi_config.models import (
    Hardware,
    InferenceNodeConfig,
    ModelConfig,
    ModelOverride,
    NodeVersion,
    SeedInfo,
    UpgradePlan,
)
from dapi_config.schedule import due_winner
from dapi_config.settings import AuditRetention
from dapi_config.store.backend import (
    AUDIT_PAGE_MAX,
    SEED_KINDS,
    AuditEntry,
    AuditFilter,
    BlsDealerOpening,
    ParamsT,
    SealedToken,
    Sealer,
    SecurityKeyRow,
    SeedKind,
    auth_token_context,
)
from dapi_config.store.chain import KeyProvider, chain_rows, link

log = logging.getLogger("dapi_config.state")

#: Characters of an audit value stored in full (beyond: its digest and size).
AUDIT_VALUE_LIMIT = 16 * 1024

HEIGHT = "current_height"
NODE_VERSION = "current_node_version"

_NODE_COLUMNS = (
    "id, host, inference_segment, inference_port, poc_segment, poc_port, models, "
    "max_concurrent, hardware, version, is_enabled, base_url, auth_token, url, extra"
)
_NODE_VALUES = ", ".join("?" for _ in _NODE_COLUMNS.split(","))

#: Who is changing state, recorded in every audit row.
current_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dapi_config_actor", default=None
)

#: Audit retention is applied every this many revisions, inside that write's transaction.
AUDIT_PRUNE_EVERY = 1000
#: At most this many audit rows are deleted per prune, so no single write pays for a backlog.
AUDIT_PRUNE_BATCH = 10_000
#: The ``secrets`` row holding the master key's derivation parameters (not secret).
KEY_PARAMS_SECRET = "master_key_params"  # noqa: S105 - a row name


#: Every state table, in an order that loads without breaking a foreign key (a copy of the
#: state between backends goes through these; ``schema_migrations`` belongs to each backend).
STATE_TABLES: tuple[str, ...] = (
    "chain_state",
    "seed_info",
    "network_params",
    "node_versions",
    "upgrade_plans",
    "inference_nodes",
    "mlnode_security",
    "secrets",
    "audit_log",
    "audit_checkpoint",
    "legacy_imports",
    "predecessor_kv",
    "bls_dealer_openings",
    "api_tokens",
)
#: The audit trail: it only grows (a restore keeps it and appends its own entry).
AUDIT_TABLE = "audit_log"
#: Where the trail's chain starts when the retention cut its oldest rows.
CHECKPOINT_TABLE = "audit_checkpoint"
#: The API tokens: credentials, not configuration. A restore keeps the current ones (it must
#: not bring back a revoked token, nor take away one created since the backup).
TOKENS_TABLE = "api_tokens"
#: Tables a restore keeps as they are.
KEPT_ON_RESTORE: tuple[str, ...] = (AUDIT_TABLE, CHECKPOINT_TABLE, TOKENS_TABLE)
#: The audit action of a restore; its new value names the backup and the revisions undone.
RESTORE_ACTION = "restore"


class Cursor(Protocol):
    """What a statement returns (``sqlite3.Cursor`` and psycopg's cursor both fit)."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlDatabase(Protocol):
    """A backend's connections: runs the shared statements (``?`` placeholders)."""

    @property
    def integrity_errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions a unique or foreign-key violation raises."""

    @property
    def path(self) -> Any: ...

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def query_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def transaction(self, *, durable: bool = False) -> contextlib.AbstractContextManager[None]: ...

    def snapshot(self) -> contextlib.AbstractContextManager[None]: ...

    def after_commit(self, callback: Callable[[], None]) -> None: ...

    def add_commit_hook(self, hook: Callable[[], None]) -> Callable[[], None]: ...

    def add_transaction_observer(
        self, observer: Callable[[float, bool], None]
    ) -> Callable[[], None]: ...

    def table_names(self) -> list[str]: ...

    def prepare_rows(self, table: str, columns: list[str], rows: list[Any]) -> list[Any]:
        """``rows`` (from either backend) as this backend stores them (e.g. 0/1 -> bool)."""
        ...

    def reset_identities(self) -> None:
        """After rows were loaded with their ids: the next generated ids follow them."""
        ...


def _as_int64(value: int) -> int:
    """A uint64 in SQLite's signed 64-bit INTEGER: values >= 2**63 are stored as their two's
    complement (negative), as Go's uint64 -> int64 conversion does; :func:`_uint64` undoes it."""
    return value - 2**64 if value >= 2**63 else value


def _uint64(stored: int) -> int:
    return stored + 2**64 if stored < 0 else stored


def _token_info(row: Sequence[Any]) -> TokenInfo:
    return TokenInfo(str(row[0]), Role[str(row[1]).upper()], str(row[2]), row[3])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _json(value: Any) -> str:
    if type(value) is int:  # heights, every block: the same text without the encoder's cost
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _dump(model: BaseModel | None) -> Any:
    return None if model is None else model.model_dump(mode="json")


ModelT = TypeVar("ModelT", bound=BaseModel)


def _extra_of(raw: str) -> dict[str, Any]:
    """The stored unknown fields of an entry (a JSON object)."""
    return {} if raw == "{}" else dict(json.loads(raw))


def _construct_extra(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """A stored (already validated) value: known fields set, unknown ones kept as extras."""
    return model.model_construct(**data)


def _construct_model_config(data: dict[str, Any]) -> ModelConfig:
    values = dict(data)
    values["args"] = list(values.get("args", []))
    override = values.get("model_override")
    if isinstance(override, dict):
        values["model_override"] = _construct_extra(ModelOverride, override)
    return ModelConfig.model_construct(**values)


class NoMasterKeySealer:
    """The sealer of a store opened without one: reads show tokens redacted; opening or
    sealing one says why it cannot."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _fail(self) -> MasterKeyError:
        return MasterKeyError(
            f"{self.path}: node auth tokens are sealed and this store was opened without the "
            "master key (open it through ConfigManager)"
        )

    def seal(self, plaintext: str, context: str) -> str:
        raise self._fail()

    def open(self, token: str, context: str) -> str:
        raise self._fail()


_INSERT_SEED = (
    "INSERT INTO seed_info(type, seed, epoch_index, signature, claimed, extra, is_active) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _seed_row(kind: SeedKind, seed: SeedInfo, active: bool) -> tuple[Any, ...]:
    return (
        kind,
        seed.seed,
        _as_int64(seed.epoch_index),
        seed.signature,
        seed.claimed,
        _json(seed.model_extra or {}),
        active,
    )


def audit_digest(value: Any) -> str:
    """The SHA-256 an audit row records in place of a value too large to keep (see
    :func:`_audit_value`): what a check compares the current value with."""
    return hashlib.sha256(_json(value).encode("utf-8")).hexdigest()


def _no_chain_key() -> bytes | None:
    return None


def _audit_value(value: Any) -> str:
    """An audit row's old or new value as JSON; one above :data:`AUDIT_VALUE_LIMIT` characters
    is recorded as its digest and size, so a huge write cannot make the trail (or an audit
    reply) huge."""
    text = _json(value)
    if len(text) <= AUDIT_VALUE_LIMIT:
        return text
    return _json({"omitted": True, "size": len(text), "sha256": audit_digest(value)})


class StateQueries:
    """The shared statements; a backend sets ``db``, ``default_actor``, ``audit_retention``
    and ``_sealer`` and adds its own opening, hot cache and backups."""

    db: SqlDatabase
    default_actor: str
    audit_retention: AuditRetention
    _sealer: Sealer

    def __init__(
        self, *, default_actor: str = "library", audit_retention: AuditRetention | None = None
    ) -> None:
        """Call with ``self.db`` already set."""
        self.default_actor = default_actor
        self.audit_retention = audit_retention or AuditRetention()
        self._sealer = NoMasterKeySealer(self.path)
        self._chain_key: KeyProvider = _no_chain_key

    @property
    def path(self) -> str:
        return str(self.db.path)

    def transaction(self, *, durable: bool = False) -> contextlib.AbstractContextManager[None]:
        """One atomic write transaction (nests as a savepoint); ``durable`` syncs its commit
        to disk whatever the durability setting."""
        return self.db.transaction(durable=durable)

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """A consistent read of several values, without blocking writers."""
        return self.db.snapshot()

    @contextlib.contextmanager
    def acting_as(self, actor: str) -> Iterator[None]:
        """Record ``actor`` in the audit rows of writes made inside this block."""
        token = current_actor.set(actor)
        try:
            yield
        finally:
            current_actor.reset(token)

    # --- audit -------------------------------------------------------------------------

    def use_chain_key(self, provider: KeyProvider) -> None:
        """Chain the audit rows this store writes under the key ``provider`` gives (None:
        plain SHA-256); see :mod:`dapi_config.store.chain`."""
        self._chain_key = provider

    def _audit(self, action: str, target: str, old: Any, new: Any) -> int:
        """Append an audit row, chained to the one before, in the caller's transaction;
        returns its revision."""
        actor = current_actor.get() or self.default_actor
        content = (
            _now(),
            actor,
            action,
            target,
            None if old is None else _audit_value(old),
            None if new is None else _audit_value(new),
        )
        # The previous row's chain value comes back with the new revision: one statement (one
        # round trip to PostgreSQL) instead of two. NULL: there is no previous row.
        row = self.db.query_one(
            "INSERT INTO audit_log(at, actor, action, target, old_value, new_value) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING revision, "
            "(SELECT COALESCE(p.chain, '') FROM audit_log AS p "
            "WHERE p.revision < audit_log.revision ORDER BY p.revision DESC LIMIT 1)",
            content,
        )
        revision = int(row[0])
        self._chain((revision, *content), None if row[1] is None else str(row[1]))
        self.db.after_commit(
            lambda: log.info("state change r%s by %s: %s %s", revision, actor, action, target)
        )
        if revision % AUDIT_PRUNE_EVERY == 0:
            # Retention piggybacks on one write in AUDIT_PRUNE_EVERY (a bounded range delete on
            # the primary key), so library users that never run the service are covered too.
            deleted = self.prune_audit()
            if deleted:
                self.db.after_commit(
                    lambda: log.info("audit retention: pruned %d old audit rows", deleted)
                )
        return revision

    def _previous_chain(self, revision: int) -> str | None:
        """The chain value of the newest row before ``revision`` (None: no such row kept)."""
        row = self.db.query_one(
            "SELECT COALESCE(chain, '') FROM audit_log WHERE revision < ? "
            "ORDER BY revision DESC LIMIT 1",
            (revision,),
        )
        return None if row is None else str(row[0])

    def _chain(self, row: tuple[Any, ...], previous: str | None) -> None:
        """Set the chain value of the row just inserted (its revision first in ``row``), after
        the row whose chain value is ``previous`` (None: no row before it is kept)."""
        if previous is None:
            checkpoint = self.audit_checkpoint()
            start = "" if checkpoint is None else checkpoint[1]
        else:
            start = previous
        self.db.execute(
            "UPDATE audit_log SET chain = ? WHERE revision = ?",
            (link(self._chain_key(), start, row), row[0]),
        )

    def audit_checkpoint(self) -> tuple[int, str] | None:
        """The revision and chain value of the newest row the retention deleted (None: the
        trail is whole from its first row)."""
        row = self.db.query_one("SELECT revision, chain FROM audit_checkpoint WHERE id = 1")
        return None if row is None else (int(row[0]), str(row[1]))

    def audit_chain_rows(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` audit rows after revision ``after`` as stored, for a walk along the
        chain: the seven chained columns, then ``chain``."""
        return self.db.query_all(
            "SELECT revision, at, actor, action, target, old_value, new_value, chain "
            "FROM audit_log WHERE revision > ? ORDER BY revision LIMIT ?",
            (after, limit),
        )

    def rechain_trail(self) -> None:
        """Chain every audit row again under this store's key, from the checkpoint (in the
        caller's transaction): a trail copied from another state was chained under its key."""
        checkpoint = self.audit_checkpoint()
        previous, after = ("", 0) if checkpoint is None else (checkpoint[1], checkpoint[0])
        key = self._chain_key()
        while rows := self.audit_chain_rows(after, 5000):
            for chain, revision in chain_rows([r[:7] for r in rows], key, previous):
                self.db.execute(
                    "UPDATE audit_log SET chain = ? WHERE revision = ?", (chain, revision)
                )
                previous, after = chain, revision

    def prune_audit(self, batch: int = AUDIT_PRUNE_BATCH) -> int:
        """Delete up to ``batch`` of the oldest audit rows beyond the retention; returns how many.

        Not itself audited (it is housekeeping of the audit log). Runs in the caller's
        transaction.
        """
        keep = self.audit_retention
        if keep.rows is None and keep.days is None:
            return 0
        # Two subqueries: SQLite answers a lone MIN()/MAX() from the primary key in O(log n),
        # but MIN() and MAX() in one SELECT scan the whole table.
        lo, hi = self.db.query_one(
            "SELECT (SELECT MIN(revision) FROM audit_log), (SELECT MAX(revision) FROM audit_log)"
        )
        if lo is None:
            return 0
        cutoff = lo - 1  # rows with revision <= cutoff go
        if keep.rows is not None:
            cutoff = max(cutoff, hi - keep.rows)
        if keep.days is not None:
            oldest_allowed = (datetime.now(UTC) - timedelta(days=keep.days)).isoformat(
                timespec="microseconds"
            )
            # Revisions are written in time order: only the oldest `batch` rows can be due.
            row = self.db.query_one(
                "SELECT MAX(revision) FROM audit_log WHERE revision < ? AND at < ?",
                (lo + batch, oldest_allowed),
            )
            if row[0] is not None:
                cutoff = max(cutoff, int(row[0]))
        cutoff = min(cutoff, lo + batch - 1)
        if cutoff < lo:
            return 0
        # The cut keeps the chain value of its newest row: the rows kept still check from it.
        last = self.db.query_one(
            "SELECT revision, chain FROM audit_log WHERE revision <= ? "
            "ORDER BY revision DESC LIMIT 1",
            (cutoff,),
        )
        self.db.execute(
            "INSERT INTO audit_checkpoint(id, revision, chain, at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET revision = excluded.revision, "
            "chain = excluded.chain, at = excluded.at",
            (int(last[0]), str(last[1] or ""), _now()),
        )
        return int(self.db.execute("DELETE FROM audit_log WHERE revision <= ?", (cutoff,)).rowcount)

    def audit_entries(
        self,
        since: int = 0,
        limit: int = 100,
        *,
        newest: bool = False,
        where: AuditFilter | None = None,
    ) -> list[AuditEntry]:
        """Audit rows with ``revision > since``, oldest first, at most ``limit`` (capped at
        :data:`AUDIT_PAGE_MAX`): the first ``limit`` of them, or with ``newest`` the last;
        ``where``: only the rows of that actor, action and target (each exact, when given).
        A change a later restore undid carries that restore's revision in ``undone_by``."""
        limit = max(0, min(limit, AUDIT_PAGE_MAX))
        order = "DESC" if newest else "ASC"
        clauses: list[str] = ["revision > ?"]
        params: list[object] = [since]
        for column, value in (where or AuditFilter()).items():
            clauses.append(f"{column} = ?")
            params.append(value)
        rows = self.db.query_all(
            "SELECT revision, at, actor, action, target, old_value, new_value FROM audit_log "
            f"WHERE {' AND '.join(clauses)} ORDER BY revision {order} LIMIT ?",
            (*params, limit),
        )
        if newest:
            rows.reverse()
        undone = self._undone_ranges(int(rows[0][0])) if rows else []
        return [
            AuditEntry(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                None if r[5] is None else json.loads(r[5]),
                None if r[6] is None else json.loads(r[6]),
                undone_by=next((by for low, high, by in undone if low <= r[0] <= high), None),
            )
            for r in rows
        ]

    def _undone_ranges(self, first: int) -> list[tuple[int, int, int]]:
        """``(first undone, last undone, restore revision)`` of every restore after ``first``,
        oldest first (a change undone twice is named by the first restore that undid it)."""
        ranges = []
        for revision, value in self.db.query_all(
            "SELECT revision, new_value FROM audit_log WHERE revision > ? AND action = ? "
            "ORDER BY revision",
            (first, RESTORE_ACTION),
        ):
            undone = (json.loads(value) or {}).get("undone") if value else None
            if undone:
                ranges.append((int(undone["from"]), int(undone["to"]), int(revision)))
        return ranges

    def record_trail_jump(self, where: str, copied: int, before: int) -> None:
        """Mark, at revision ``before + 1``, that a copy replaced this state's trail (which
        had reached ``before``) with one ending at ``copied`` (in the caller's transaction;
        the old trail is in the backup taken before the copy)."""
        actor = current_actor.get() or self.default_actor
        row = (
            before + 1,
            _now(),
            actor,
            "state_copy",
            "state",
            _audit_value({"revision": before}),
            _audit_value({"copied_to": where, "copied_revision": copied}),
        )
        self.db.execute(
            "INSERT INTO audit_log(revision, at, actor, action, target, old_value, new_value) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        self._chain(row, self._previous_chain(row[0]))

    def record_restore(
        self, source: str, backup_revision: int, latest: int, backup_chain: str | None = None
    ) -> int:
        """Append the audit entry of a restore (in the caller's transaction): the backup, its
        revision, the chain value of its newest audit row (which tells a check whether the
        backup's history is this state's) and the revisions it undid; returns the entry's
        revision."""
        undone = {"from": backup_revision + 1, "to": latest} if latest > backup_revision else None
        new: dict[str, Any] = {"backup": source, "backup_revision": backup_revision}
        if backup_chain:
            new["backup_chain"] = backup_chain
        new["undone"] = undone
        return self._audit(RESTORE_ACTION, "state", {"revision": latest}, new)

    def audit_count(self) -> int:
        """How many audit rows are kept."""
        return int(self.db.query_one("SELECT COUNT(*) FROM audit_log")[0])

    def latest_revision(self) -> int:
        """The newest audit revision (0 when nothing was ever written)."""
        row = self.db.query_one("SELECT COALESCE(MAX(revision), 0) FROM audit_log")
        return int(row[0])

    # --- chain state and the hot cache -------------------------------------------------

    def _chain_value(self, key: str) -> str | None:
        row = self.db.query_one("SELECT value FROM chain_state WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def _put_chain_value(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO chain_state(key, value, updated_at) VALUES (?, ?, CURRENT_TIMESTAMP) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (key, value),
        )

    def _read_hot(self) -> tuple[int, str]:
        rows = dict(
            self.db.query_all(
                "SELECT key, value FROM chain_state WHERE key IN (?, ?)", (HEIGHT, NODE_VERSION)
            )
        )
        return int(rows.get(HEIGHT, 0)), str(rows.get(NODE_VERSION, ""))

    def chain_state(self) -> dict[str, str]:
        """Every chain_state key and value (height, node version, legacy keys)."""
        return {str(k): str(v) for k, v in self.db.query_all("SELECT key, value FROM chain_state")}

    def set_height(self, height: int) -> tuple[int, str | None]:
        """Store ``height`` and pop the due node versions (PopIf), in the caller's transaction.

        One audit row: ``old``/``new`` are the heights; when the schedule fires they are
        ``{"current_height", "current_node_version", "node_versions"}`` (the popped entries).
        Returns (previous height, new current version or None when the schedule did not fire).
        """
        # The old height and whether any version is due, in one statement: a height comes
        # every block and the schedule is usually empty or far ahead.
        old_raw, any_due = self.db.query_one(
            "SELECT (SELECT value FROM chain_state WHERE key = ?), "
            "EXISTS (SELECT 1 FROM node_versions WHERE height <= ?)",
            (HEIGHT, height),
        )
        old = int(old_raw) if old_raw is not None else 0
        self._put_chain_value(HEIGHT, str(height))
        due = (
            self.db.query_all(
                "SELECT height, version FROM node_versions WHERE height <= ? ORDER BY height, id",
                (height,),
            )
            if any_due
            else []
        )
        new_version: str | None = None
        if due:
            new_version = due_winner([NodeVersion(height=h, version=v) for h, v in due])
            old_version = self._chain_value(NODE_VERSION) or ""
            self.db.execute("DELETE FROM node_versions WHERE height <= ?", (height,))
            self._put_chain_value(NODE_VERSION, new_version)
            popped = [{"height": h, "version": v} for h, v in due]
            self._audit(
                "set_height",
                HEIGHT,
                {HEIGHT: old, NODE_VERSION: old_version, "node_versions": popped},
                {HEIGHT: height, NODE_VERSION: new_version, "node_versions": []},
            )
        else:
            self._audit("set_height", HEIGHT, old, height)
        return old, new_version

    def set_chain_value(self, key: str, value: str) -> None:
        """Set any chain_state key (used for the legacy keys); audited."""
        old = self._chain_value(key)
        self._put_chain_value(key, value)
        self._audit("set_chain_state", key, old, value)

    # --- node-version schedule ---------------------------------------------------------

    def node_versions(self) -> list[NodeVersion]:
        """The schedule, by height then insertion order."""
        rows = self.db.query_all("SELECT height, version FROM node_versions ORDER BY height, id")
        return [NodeVersion(height=h, version=v) for h, v in rows]

    def add_node_version(self, version: NodeVersion) -> bool:
        """Schedule ``version``; False (and no change) when the pair is already scheduled."""
        cur = self.db.execute(
            "INSERT INTO node_versions(height, version) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (version.height, version.version),
        )
        if cur.rowcount != 1:
            return False
        self._audit("add_node_version", f"{version.height}", None, _dump(version))
        return True

    def replace_node_versions(self, versions: Sequence[NodeVersion]) -> None:
        """Replace the whole schedule (legacy import); duplicate pairs are stored once."""
        old = [_dump(v) for v in self.node_versions()]
        self.db.execute("DELETE FROM node_versions")
        for version in versions:
            self.db.execute(
                "INSERT INTO node_versions(height, version) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (version.height, version.version),
            )
        self._audit("set_node_versions", "node_versions", old, [_dump(v) for v in versions])

    # --- seeds ---------------------------------------------------------------------------

    def seed(self, kind: SeedKind) -> SeedInfo:
        """The active seed of ``kind`` (the all-zero seed when unset)."""
        row = self.db.query_one(
            "SELECT seed, epoch_index, signature, claimed, extra FROM seed_info "
            "WHERE type = ? AND is_active",
            (kind,),
        )
        if row is None:
            return SeedInfo()
        return SeedInfo(
            seed=row[0],
            epoch_index=_uint64(row[1]),
            signature=row[2],
            claimed=bool(row[3]),
            **_extra_of(row[4]),
        )

    def set_seed(self, kind: SeedKind, seed: SeedInfo) -> None:
        """Make ``seed`` the active ``kind`` seed; the old row stays as history."""
        old = self.seed(kind)
        self.db.execute(
            "UPDATE seed_info SET is_active = FALSE WHERE type = ? AND is_active", (kind,)
        )
        self._insert_seed(kind, seed)
        self._audit(f"set_{kind}_seed", f"{kind}_seed", _dump(old), _dump(seed))

    def _insert_seed(self, kind: SeedKind, seed: SeedInfo, *, active: bool = True) -> None:
        self.db.execute(_INSERT_SEED, _seed_row(kind, seed, active))

    def add_seed_history(self, seeds: Sequence[tuple[SeedKind, SeedInfo]]) -> None:
        """Keep ``seeds`` as old (inactive) seeds of their kinds: a batch of an imported
        predecessor's history, in one statement and one audit row (counts per kind)."""
        if not seeds:
            return
        self.db.executemany(_INSERT_SEED, [_seed_row(kind, seed, False) for kind, seed in seeds])
        counts = {k: n for k in SEED_KINDS if (n := sum(1 for kind, _ in seeds if kind == k))}
        self._audit("import_seed_history", "seeds", None, {"inactive_seeds": counts})

    def rotate_seeds(self) -> None:
        """previous <- current <- upcoming; upcoming cleared. Old rows stay as history."""
        before = {k: self.seed(k) for k in SEED_KINDS}
        self.db.execute("UPDATE seed_info SET is_active = FALSE WHERE is_active")
        self._insert_seed("previous", before["current"])
        self._insert_seed("current", before["upcoming"])
        self._audit(
            "rotate_seeds",
            "seeds",
            {k: _dump(v) for k, v in before.items()},
            {
                "previous": _dump(before["current"]),
                "current": _dump(before["upcoming"]),
                "upcoming": _dump(SeedInfo()),
            },
        )

    # --- parameter caches ----------------------------------------------------------------

    def params(self, kind: str, model: type[ParamsT]) -> ParamsT:
        """The cached parameters of ``kind`` (defaults when never set)."""
        row = self.db.query_one(
            "SELECT param_data FROM network_params WHERE param_type = ?", (kind,)
        )
        return model() if row is None else model.model_validate_json(row[0])

    def set_params(self, kind: str, params: BaseModel) -> None:
        """Replace the cached parameters of ``kind``."""
        old = self.db.query_one(
            "SELECT param_data FROM network_params WHERE param_type = ?", (kind,)
        )
        new = _dump(params)
        self.db.execute(
            "INSERT INTO network_params(param_type, param_data, updated_at) "
            "VALUES (?, ?, CURRENT_TIMESTAMP) ON CONFLICT(param_type) DO UPDATE SET "
            "param_data = excluded.param_data, updated_at = excluded.updated_at",
            (kind, _json(new)),
        )
        self._audit(f"set_{kind}_params", kind, None if old is None else json.loads(old[0]), new)

    # --- upgrade plan --------------------------------------------------------------------

    def upgrade_plan(self) -> UpgradePlan:
        """The active upgrade plan (the empty plan when none)."""
        row = self.db.query_one(
            "SELECT name, height, binaries, node_version, extra FROM upgrade_plans WHERE is_active"
        )
        if row is None:
            return UpgradePlan()
        return UpgradePlan(
            name=row[0],
            height=row[1],
            binaries=json.loads(row[2]),
            node_version=row[3],
            **_extra_of(row[4]),
        )

    def set_upgrade_plan(self, plan: UpgradePlan) -> None:
        """Make ``plan`` the active plan; the old one stays as history."""
        old = self.upgrade_plan()
        self.db.execute("UPDATE upgrade_plans SET is_active = FALSE WHERE is_active")
        self.db.execute(
            "INSERT INTO upgrade_plans(name, height, binaries, node_version, extra) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                plan.name,
                plan.height,
                _json(plan.binaries),
                plan.node_version,
                _json(plan.model_extra or {}),
            ),
        )
        self._audit("set_upgrade_plan", "upgrade_plan", _dump(old), _dump(plan))

    # --- inference-node registry ---------------------------------------------------------

    def use_sealer(self, sealer: Sealer) -> None:
        """Seal node ``auth_token`` values with ``sealer`` (the manager sets it at open)."""
        self._sealer = sealer

    def _node_from_row(self, row: Sequence[Any]) -> InferenceNodeConfig:
        # Rows were validated on the way in; model_construct skips a second validation so
        # reading a 10,000-node registry stays cheap. Every read builds fresh objects.
        models = {name: _construct_model_config(cfg) for name, cfg in json.loads(row[6]).items()}
        hardware = [_construct_extra(Hardware, h) for h in json.loads(row[8])]
        token: SecretStr | None = None
        if row[12]:
            token = SealedToken(row[12], auth_token_context(row[0]), self._sealer)
        return InferenceNodeConfig.model_construct(
            id=row[0],
            host=row[1],
            inference_segment=row[2],
            inference_port=row[3],
            poc_segment=row[4],
            poc_port=row[5],
            models=models,
            max_concurrent=row[7],
            hardware=hardware,
            version=row[9],
            is_enabled=bool(row[10]),
            base_url=row[11],
            auth_token=token,
            url=row[13],
            **_extra_of(row[14]),
        )

    def _sealed_token(self, node: InferenceNodeConfig) -> str:
        token = node.auth_token
        if token is None:
            return ""
        context = auth_token_context(node.id)
        if isinstance(token, SealedToken) and token.context == context:
            return token.sealed  # unchanged: no need to open it
        return self._sealer.seal(token.get_secret_value(), context)

    def _node_params(
        self, node: InferenceNodeConfig, data: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        """The row of ``node``; ``data``: its JSON dump, when the caller has it already."""
        if data is None:
            data = node.model_dump(mode="json", exclude={"auth_token"})
        return (
            node.id,
            node.host,
            node.inference_segment,
            node.inference_port,
            node.poc_segment,
            node.poc_port,
            _json(data["models"]),
            node.max_concurrent,
            _json(data["hardware"]),
            node.version,
            node.is_enabled,
            node.base_url,
            self._sealed_token(node),
            node.url,
            _json({k: data[k] for k in node.model_extra or {}}),
        )

    def nodes(self) -> list[InferenceNodeConfig]:
        """Every node, in registration order."""
        rows = self.db.query_all(f"SELECT {_NODE_COLUMNS} FROM inference_nodes ORDER BY position")
        return [self._node_from_row(r) for r in rows]

    def nodes_page(self, after: str | None, limit: int) -> list[InferenceNodeConfig]:
        """At most ``limit`` nodes in registration order, after the node ``after`` (from the
        start when None). Raises :class:`NodeNotFoundError` for an unknown ``after``."""
        if after is None:
            rows = self.db.query_all(
                f"SELECT {_NODE_COLUMNS} FROM inference_nodes ORDER BY position LIMIT ?",
                (limit,),
            )
        else:
            start = self.db.query_one("SELECT position FROM inference_nodes WHERE id = ?", (after,))
            if start is None:
                raise NodeNotFoundError(after)
            rows = self.db.query_all(
                f"SELECT {_NODE_COLUMNS} FROM inference_nodes WHERE position > ? "
                "ORDER BY position LIMIT ?",
                (start[0], limit),
            )
        return [self._node_from_row(r) for r in rows]

    def node_count(self) -> int:
        return int(self.db.query_one("SELECT COUNT(*) FROM inference_nodes")[0])

    def enabled_node_count(self) -> int:
        """Nodes whose admin state is enabled (counted, not loaded)."""
        row = self.db.query_one(
            "SELECT COUNT(*) FROM inference_nodes WHERE is_enabled = ?", (True,)
        )
        return int(row[0])

    def node(self, node_id: str) -> InferenceNodeConfig:
        """One node; raises :class:`NodeNotFoundError`."""
        row = self.db.query_one(
            f"SELECT {_NODE_COLUMNS} FROM inference_nodes WHERE id = ?", (node_id,)
        )
        if row is None:
            raise NodeNotFoundError(node_id)
        return self._node_from_row(row)

    def _insert_node(self, node: InferenceNodeConfig) -> dict[str, Any]:
        """Insert ``node``; returns its dump (for the audit row: a node is dumped once)."""
        data = node.model_dump(mode="json")
        try:
            self.db.execute(
                f"INSERT INTO inference_nodes({_NODE_COLUMNS}, position) VALUES "
                f"({_NODE_VALUES}, (SELECT COALESCE(MAX(position), 0) + 1 FROM inference_nodes))",
                self._node_params(node, data),
            )
        except self.db.integrity_errors:
            raise DuplicateNodeError(node.id) from None
        return data

    def add_node(self, node: InferenceNodeConfig) -> None:
        """Register ``node``; raises :class:`DuplicateNodeError`."""
        self._audit("add_node", node.id, None, self._insert_node(node))

    def add_nodes(self, nodes: Sequence[InferenceNodeConfig]) -> None:
        """Register several nodes (one audit row); raises :class:`DuplicateNodeError`."""
        self._audit("add_nodes", "nodes", None, [self._insert_node(n) for n in nodes])

    def update_node(
        self, node: InferenceNodeConfig, *, old: InferenceNodeConfig | None = None
    ) -> InferenceNodeConfig:
        """Replace the node with ``node.id``; returns the old value (``old``: the caller read
        it in this transaction already). Raises NodeNotFoundError."""
        old = old if old is not None else self.node(node.id)
        new = node.model_dump(mode="json")
        params = self._node_params(node, new)
        self.db.execute(
            "UPDATE inference_nodes SET host = ?, inference_segment = ?, inference_port = ?, "
            "poc_segment = ?, poc_port = ?, models = ?, max_concurrent = ?, hardware = ?, "
            "version = ?, is_enabled = ?, base_url = ?, auth_token = ?, url = ?, extra = ?, "
            "updated_at = CURRENT_TIMESTAMP WHERE id = ?",
            (*params[1:], node.id),
        )
        self._audit("update_node", node.id, _dump(old), new)
        return old

    def remove_node(self, node_id: str) -> InferenceNodeConfig:
        """Remove a node (and its security key); returns it. Raises NodeNotFoundError."""
        old = self.node(node_id)
        self.db.execute("DELETE FROM inference_nodes WHERE id = ?", (node_id,))
        self._audit("remove_node", node_id, _dump(old), None)
        return old

    def set_node_enabled(self, node_id: str, enabled: bool) -> InferenceNodeConfig:
        """Enable or disable a node; returns the updated node. Raises NodeNotFoundError."""
        old = self.node(node_id)
        self.db.execute(
            "UPDATE inference_nodes SET is_enabled = ?, updated_at = CURRENT_TIMESTAMP "
            "WHERE id = ?",
            (enabled, node_id),
        )
        self._audit("enable_node" if enabled else "disable_node", node_id, old.is_enabled, enabled)
        return old.model_copy(update={"is_enabled": enabled})

    def replace_nodes(
        self, nodes: Sequence[InferenceNodeConfig], *, keep_admin_state: Collection[str] = ()
    ) -> None:
        """Replace the whole registry with ``nodes`` (callers check for duplicate ids).

        Nodes that stay keep their rows (an upsert, not delete + insert), so their security
        keys survive; the keys of nodes that leave go with them (ON DELETE CASCADE). Those
        named in ``keep_admin_state`` keep their stored ``is_enabled``.
        """
        current = self.nodes()
        if keep_admin_state:
            stored = {n.id: n for n in current}
            nodes = [
                with_admin_state_of(stored[n.id], n)
                if n.id in keep_admin_state and n.id in stored
                else n
                for n in nodes
            ]
        old = [_dump(n) for n in current]
        staying = {n.id for n in nodes}
        for gone in [n.id for n in current if n.id not in staying]:
            self.db.execute("DELETE FROM inference_nodes WHERE id = ?", (gone,))
        for position, node in enumerate(nodes, start=1):
            self.db.execute(
                f"INSERT INTO inference_nodes({_NODE_COLUMNS}, position) VALUES "
                f"({_NODE_VALUES}, ?) ON CONFLICT(id) DO UPDATE SET "
                "host = excluded.host, inference_segment = excluded.inference_segment, "
                "inference_port = excluded.inference_port, poc_segment = excluded.poc_segment, "
                "poc_port = excluded.poc_port, models = excluded.models, "
                "max_concurrent = excluded.max_concurrent, hardware = excluded.hardware, "
                "version = excluded.version, is_enabled = excluded.is_enabled, "
                "base_url = excluded.base_url, auth_token = excluded.auth_token, "
                "url = excluded.url, extra = excluded.extra, "
                "position = excluded.position, updated_at = CURRENT_TIMESTAMP",
                (*self._node_params(node), position),
            )
        self._audit("set_nodes", "nodes", old, [_dump(n) for n in nodes])

    # --- secrets -------------------------------------------------------------------------

    def secret(self, name: str) -> str | None:
        """A named secret row's value (callers store secrets sealed), or None."""
        row = self.db.query_one("SELECT value FROM secrets WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    def set_secret(
        self, name: str, value: str, *, fingerprint: str, old_fingerprint: str | None = None
    ) -> None:
        """Store a named secret (already sealed by the caller); the audit row carries only
        fingerprints, never the value."""
        old = self.db.query_one("SELECT 1 FROM secrets WHERE name = ?", (name,))
        self._put_secret(name, value)
        self._audit(
            "set_secret", name, (old_fingerprint or "<replaced>") if old else None, fingerprint
        )

    def _put_secret(self, name: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO secrets(name, value, updated_at) VALUES (?, ?, CURRENT_TIMESTAMP) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (name, value),
        )

    def put_predecessor_kv(self, key: str, value_json: str) -> None:
        """Keep a ``kv_config`` row of an imported ``gonka.db`` that no column here holds."""
        self.db.execute(
            "INSERT INTO predecessor_kv(key, value_json, imported_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, "
            "imported_at = excluded.imported_at",
            (key, value_json, _now()),
        )
        self._audit("import_predecessor_kv", key, None, json.loads(value_json))

    def put_bls_openings(
        self, openings: Sequence[BlsDealerOpening], *, seal: Callable[[str, str], str]
    ) -> None:
        """Keep the BLS dealer openings of an imported ``gonka.db``, share and seed sealed by
        ``seal(base64, context)``; one audit row with their keys only."""
        for o in openings:
            where = f"bls_dealer_opening:{o.epoch_id}:{o.recipient_index}:{o.ciphertext_index}"
            self.db.execute(
                "INSERT INTO bls_dealer_openings(epoch_id, recipient_index, ciphertext_index, "
                "slot_index, share_bytes, seed, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(epoch_id, recipient_index, ciphertext_index) DO UPDATE SET "
                "slot_index = excluded.slot_index, share_bytes = excluded.share_bytes, "
                "seed = excluded.seed, imported_at = excluded.imported_at",
                (
                    _as_int64(o.epoch_id),
                    o.recipient_index,
                    o.ciphertext_index,
                    o.slot_index,
                    seal(base64.b64encode(o.share_bytes).decode("ascii"), f"{where}:share"),
                    seal(base64.b64encode(o.seed).decode("ascii"), f"{where}:seed"),
                    _now(),
                ),
            )
        self._audit(
            "import_bls_dealer_openings",
            "bls_dealer_openings",
            None,
            [[o.epoch_id, o.recipient_index, o.ciphertext_index] for o in openings],
        )

    def key_params(self) -> str | None:
        """The master key's derivation parameters (JSON), or None before the first secret."""
        return self.secret(KEY_PARAMS_SECRET)

    def set_key_params(self, raw: str) -> None:
        """Record the master key's parameters, in the transaction of the first secret write
        (not audited separately: that write's own row covers the change)."""
        self.db.execute(
            "INSERT INTO secrets(name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
            (KEY_PARAMS_SECRET, raw),
        )

    # --- per-node security keys ----------------------------------------------------------

    _KEY_COLUMNS = "node_id, security_key, key_version, created_at, updated_at"

    def security_key(self, node_id: str) -> SecurityKeyRow | None:
        """The stored (sealed) security key of ``node_id``, or None."""
        row = self.db.query_one(
            f"SELECT {self._KEY_COLUMNS} FROM mlnode_security WHERE node_id = ?", (node_id,)
        )
        return None if row is None else SecurityKeyRow(*row)

    def security_keys(self) -> list[SecurityKeyRow]:
        """Every stored security key, in node registration order."""
        rows = self.db.query_all(
            "SELECT s.node_id, s.security_key, s.key_version, s.created_at, s.updated_at "
            "FROM mlnode_security s JOIN inference_nodes n ON n.id = s.node_id "
            "ORDER BY n.position"
        )
        return [SecurityKeyRow(*r) for r in rows]

    def put_security_key(
        self,
        node_id: str,
        sealed: str,
        key_version: int,
        *,
        fingerprint: str,
        old_fingerprint: str | None,
    ) -> SecurityKeyRow:
        """Create (version 1) or replace (rotation) a node's key; audited with fingerprints.

        Raises :class:`NodeNotFoundError` when the node is not registered.
        """
        self.node(node_id)
        old = self.security_key(node_id)
        now = _now()
        self.db.execute(
            "INSERT INTO mlnode_security(node_id, security_key, key_version, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET "
            "security_key = excluded.security_key, key_version = excluded.key_version, "
            "updated_at = excluded.updated_at",
            (node_id, sealed, key_version, now, now),
        )
        self._audit(
            "rotate_security_key" if old else "create_security_key",
            node_id,
            None if old is None else {"key_version": old.key_version, "key": old_fingerprint},
            {"key_version": key_version, "key": fingerprint},
        )
        return SecurityKeyRow(node_id, sealed, key_version, old.created_at if old else now, now)

    def delete_security_key(self, node_id: str, *, old_fingerprint: str | None) -> bool:
        """Revoke a node's key; False (and no audit row) when it had none."""
        old = self.security_key(node_id)
        if old is None:
            return False
        self.db.execute("DELETE FROM mlnode_security WHERE node_id = ?", (node_id,))
        self._audit(
            "delete_security_key",
            node_id,
            {"key_version": old.key_version, "key": old_fingerprint},
            None,
        )
        return True

    # --- one-time imports ----------------------------------------------------------------

    def find_import(self, kind: str) -> dict[str, Any] | None:
        """The newest recorded import of ``kind`` (legacy YAML, node file), or None."""
        row = self.db.query_one(
            "SELECT source_path, checksum, imported_at, details FROM legacy_imports "
            "WHERE kind = ? ORDER BY id DESC LIMIT 1",
            (kind,),
        )
        if row is None:
            return None
        return {
            "source_path": row[0],
            "checksum": row[1],
            "imported_at": row[2],
            "details": json.loads(row[3]),
        }

    def record_import(
        self, kind: str, source_path: str, checksum: str, details: dict[str, Any]
    ) -> None:
        """Record a one-time import in the caller's transaction."""
        self.db.execute(
            "INSERT INTO legacy_imports(kind, source_path, checksum, imported_at, details) "
            "VALUES (?, ?, ?, ?, ?)",
            (kind, source_path, checksum, _now(), _json(details)),
        )
        self._audit("import", kind, None, {"source_path": source_path, "checksum": checksum})

    # --- API tokens (SPEC §11) ------------------------------------------------------------

    def api_tokens(self) -> list[TokenInfo]:
        """Every scoped token, by name (never a token: only what ``tokens list`` shows)."""
        return [
            _token_info(row)
            for row in self.db.query_all(
                "SELECT name, role, created_at, last_used_at FROM api_tokens ORDER BY name"
            )
        ]

    def api_token_by_digest(self, digest: str) -> TokenInfo | None:
        """The token whose SHA-256 is ``digest`` (None: no such token, or it was revoked)."""
        row = self.db.query_one(
            "SELECT name, role, created_at, last_used_at FROM api_tokens WHERE token_sha256 = ?",
            (digest,),
        )
        return None if row is None else _token_info(row)

    def has_api_tokens(self) -> bool:
        """True once any scoped token exists (then every admin route needs one)."""
        return self.db.query_one("SELECT 1 FROM api_tokens LIMIT 1") is not None

    def add_api_token(self, name: str, role: Role, digest: str) -> TokenInfo:
        """Store a new token's digest in the caller's transaction; audited with its name and
        role. Raises :class:`TokenExistsError`."""
        if self.db.query_one("SELECT 1 FROM api_tokens WHERE name = ?", (name,)) is not None:
            raise TokenExistsError(name)
        created = _now()
        self.db.execute(
            "INSERT INTO api_tokens(name, role, token_sha256, created_at) VALUES (?, ?, ?, ?)",
            (name, role.label, digest, created),
        )
        self._audit("token_create", f"token:{name}", None, {"role": role.label})
        return TokenInfo(name, role, created)

    def remove_api_token(self, name: str) -> TokenInfo:
        """Delete the token ``name`` in the caller's transaction (audited); returns what it was.
        Raises :class:`TokenNotFoundError`."""
        row = self.db.query_one(
            "DELETE FROM api_tokens WHERE name = ? RETURNING name, role, created_at, last_used_at",
            (name,),
        )
        if row is None:
            raise TokenNotFoundError(name)
        info = _token_info(row)
        self._audit("token_revoke", f"token:{name}", {"role": info.role.label}, None)
        return info

    def mark_api_token_used(self, name: str, when: str) -> None:
        """Record when the token was last used (not audited: bookkeeping, not a change)."""
        self.db.execute("UPDATE api_tokens SET last_used_at = ? WHERE name = ?", (when, name))

    # --- health --------------------------------------------------------------------------

    #: Columns whose values are secrets: :meth:`export_tables` shows them redacted.
    _SECRET_COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "secrets": ("value",),
        "mlnode_security": ("security_key",),
        "inference_nodes": ("auth_token",),
        "bls_dealer_openings": ("share_bytes", "seed"),
        "api_tokens": ("token_sha256",),
    }

    def export_tables(self, redacted: str) -> dict[str, list[dict[str, Any]]]:
        """Every table of the state file as rows of ``{column: value}``, from one consistent
        read; secret columns hold ``redacted`` instead of their (sealed) value."""
        with self.snapshot():
            names = self.db.table_names()
            out: dict[str, list[dict[str, Any]]] = {}
            for name in names:
                cursor = self.db.execute(f'SELECT * FROM "{name}"')
                columns = [d[0] for d in cursor.description]
                rows = cursor.fetchall()
                hidden = self._SECRET_COLUMNS.get(name, ())
                out[name] = [
                    {
                        c: redacted if c in hidden and v not in ("", None) else v
                        for c, v in zip(columns, row, strict=True)
                    }
                    for row in rows
                ]
            return out

    # --- whole-state copies (``state copy``, backups of a PostgreSQL state) ----------------

    def dump_table(self, table: str) -> tuple[list[str], list[Any]]:
        """Every row of a state table as stored (sealed values sealed), with its column names;
        call inside :meth:`snapshot` for a consistent copy."""
        cursor = self.db.execute(f'SELECT * FROM "{table}"')
        columns = [str(d[0]) for d in cursor.description]
        return columns, cursor.fetchall()

    def row_counts(self) -> dict[str, int]:
        """Rows per state table (what a copy is verified by, with the latest revision)."""
        return {t: int(self.db.query_one(f'SELECT COUNT(*) FROM "{t}"')[0]) for t in STATE_TABLES}

    def clear_state(self, *, keep_trail: bool = False) -> None:
        """Delete every row of every state table (a copy with ``--force``), in the caller's
        transaction; not audited: the copy that follows brings its own audit trail.
        ``keep_trail``: the audit trail and the API tokens stay (a restore, which appends its
        own entry)."""
        for table in reversed(STATE_TABLES):
            if not (keep_trail and table in KEPT_ON_RESTORE):
                self.db.execute(f'DELETE FROM "{table}"')

    def load_table(self, table: str, columns: list[str], rows: list[Any]) -> None:
        """Insert ``rows`` as they are, ids included, in the caller's transaction (not
        audited: they carry their own audit rows)."""
        if not rows:
            return
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        sql = f'INSERT INTO "{table}" ({names}) VALUES ({marks})'
        for row in self.db.prepare_rows(table, columns, rows):
            self.db.execute(sql, row)

    def finish_load(self) -> None:
        """After :meth:`load_table` calls: generated ids continue after the loaded ones."""
        self.db.reset_identities()

    def probe(self) -> None:
        """Read the state once; raises :class:`StateUnavailableError` when it is unusable."""
        self.latest_revision()

    # --- the worker key ------------------------------------------------------------------

    def set_worker_key(
        self, public: str, private: str, *, fingerprint: str, seal: Callable[[str, str], str]
    ) -> None:
        """Store a new worker pair in the caller's transaction, the private key sealed by
        ``seal(plaintext, context)``; audited with fingerprints only."""
        raw = self.secret(WORKER_KEY_SECRET)
        old = None if raw is None else json.loads(raw).get("fingerprint")
        record = {
            "public": public,
            "private": seal(private, WORKER_KEY_SECRET),
            "fingerprint": fingerprint,
        }
        self.set_secret(
            WORKER_KEY_SECRET, json.dumps(record), fingerprint=fingerprint, old_fingerprint=old
        )

    # --- hooks ---------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        """True inside this thread's write transaction."""
        return self.db.in_transaction

    def on_commit(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook()`` after every commit; returns the function that removes it."""
        return self.db.add_commit_hook(hook)

    def observe_transactions(self, observer: Callable[[float, bool], None]) -> Callable[[], None]:
        """``observer(seconds, committed)`` after every write; returns its remover."""
        return self.db.add_transaction_observer(observer)
