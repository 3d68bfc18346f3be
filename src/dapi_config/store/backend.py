"""What :class:`~dapi_config.manager.ConfigManager` needs from a state backend, and the names
every backend shares.

The contract is a small core, :class:`StateCore` (transactions, chain values, seeds, parameter
caches, the plan, nodes, the worker key), and capabilities a backend may add:
:class:`AuditTrail`, :class:`SealedSecrets`, :class:`Backups`, :class:`Tables`,
:class:`PredecessorImports` (httpx's one-method transport and apscheduler's storage kept apart
from its notifications are the model). The
database backends, :class:`~dapi_config.store.sqlite.SqliteStore` (``API_STATE_MODE=db`` and
``dual``) and :class:`~dapi_config.store.postgres.PostgresStore`, implement all of it
(:class:`StateBackend`); :class:`~dapi_config.legacy.yaml_mode.YamlStore`
(``API_STATE_MODE=yaml``, the predecessor's single file) implements the core only. The manager
asks for each capability once, at open, and maps its absence to the one
:class:`~dapi_config.errors.NotSupportedError`; it never asks which backend it has.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, SecretStr

from dapi_config.access import Role, TokenInfo
from dapi_config.models import InferenceNodeConfig, NodeVersion, SeedInfo, UpgradePlan

if TYPE_CHECKING:
    from dapi_config.store.backup import BackupInfo
    from dapi_config.store.recovery import CheckResult, RestoreResult
    from dapi_config.store.sqlcipher import StateCipher

#: Largest page of audit rows one call returns (:meth:`AuditTrail.audit_entries`).
AUDIT_PAGE_MAX = 1000

SeedKind = Literal["current", "previous", "upcoming"]
SEED_KINDS: tuple[SeedKind, ...] = ("current", "previous", "upcoming")
ParamsT = TypeVar("ParamsT", bound=BaseModel)


@dataclass(frozen=True)
class SecurityKeyRow:
    """A node's security key as stored: ``sealed`` is the encrypted key."""

    node_id: str
    sealed: str
    key_version: int
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class AuditEntry:
    """One recorded state change."""

    revision: int
    at: str
    actor: str
    action: str
    target: str
    old_value: Any
    new_value: Any
    #: The revision of the restore that undid this change (None: in effect, or not a change).
    undone_by: int | None = None


class Sealer(Protocol):
    """Seals and opens secrets under the master key (given to a backend by the manager)."""

    def seal(self, plaintext: str, context: str) -> str: ...

    def open(self, token: str, context: str) -> str: ...


def auth_token_context(node_id: str) -> str:
    """The sealing context of a node's ``auth_token``: a token sealed for one node never
    opens as another's."""
    return f"node_auth_token:{node_id}"


class SealedToken(SecretStr):
    """A node's ``auth_token`` as read from the state: kept sealed until someone asks for the
    value, so reads and redacted exports never need the master key."""

    def __init__(self, sealed: str, context: str, sealer: Sealer) -> None:
        super().__init__(sealed)
        self.context = context
        self._sealer = sealer

    def __copy__(self) -> SealedToken:
        return self  # immutable; a copy must not copy the sealer (and the store behind it)

    def __deepcopy__(self, memo: dict[int, Any]) -> SealedToken:
        return self

    @property
    def sealed(self) -> str:
        """The stored ciphertext."""
        return super().get_secret_value()

    def get_secret_value(self) -> str:
        """The token in clear; raises :class:`~dapi_config.errors.MasterKeyError`."""
        return self._sealer.open(self.sealed, self.context)


@dataclass(frozen=True)
class BlsDealerOpening:
    """One BLS dealer opening of the later predecessor's ``gonka.db`` (share and seed are
    secrets: sealed at rest)."""

    epoch_id: int
    recipient_index: int
    ciphertext_index: int
    slot_index: int
    share_bytes: bytes
    seed: bytes


@runtime_checkable
class IntegrityCheckable(Protocol):
    """A backend whose storage the service can check for damage now and then (the SQLite
    file; a database server checks its own)."""

    def quick_check(self, *, time_limit: float | None = None) -> list[str]:
        """Problems found (empty: sound); problems mark the state damaged."""
        ...


class StateCore(Protocol):
    """What every backend does, the predecessor's single YAML file included: transactions,
    the chain values, seeds, parameter caches, the plan, the node registry and the worker key.
    Writes run inside :meth:`transaction`; reads return copies."""

    @property
    def path(self) -> str: ...

    @property
    def file_backed(self) -> bool:
        """True when the state is a local file (SQLite, the legacy YAML), False for a server
        database shared by replicas (PostgreSQL)."""
        ...

    def close(self) -> None: ...

    def transaction(self, *, durable: bool = False) -> contextlib.AbstractContextManager[None]: ...

    def snapshot(self) -> contextlib.AbstractContextManager[None]: ...

    def acting_as(self, actor: str) -> contextlib.AbstractContextManager[None]: ...

    @property
    def in_transaction(self) -> bool: ...

    def on_commit(self, hook: Callable[[], None]) -> Callable[[], None]: ...

    def observe_transactions(
        self, observer: Callable[[float, bool], None]
    ) -> Callable[[], None]: ...

    def probe(self) -> None: ...

    def use_sealer(self, sealer: Sealer) -> None:
        """Seal node ``auth_token`` values with ``sealer`` (the manager sets it at open)."""

    def own_files(self) -> list[Path]:
        """The files this backend keeps (state, companions, backups): never an output."""
        ...

    def backup_before(self, reason: str, *, keep: int) -> BackupInfo | None:
        """A copy of the state before a risky change (None when the copy is no backup the
        :class:`Backups` capability lists, e.g. the YAML file's byte copy)."""
        ...

    # reads
    def hot_values(self) -> tuple[int, str]: ...

    def chain_state(self) -> dict[str, str]: ...

    def node_versions(self) -> list[NodeVersion]: ...

    def seed(self, kind: SeedKind) -> SeedInfo: ...

    def params(self, kind: str, model: type[ParamsT]) -> ParamsT: ...

    def upgrade_plan(self) -> UpgradePlan: ...

    def nodes(self) -> list[InferenceNodeConfig]: ...

    def node(self, node_id: str) -> InferenceNodeConfig: ...

    def nodes_page(self, after: str | None, limit: int) -> list[InferenceNodeConfig]: ...

    def node_count(self) -> int: ...

    def enabled_node_count(self) -> int: ...

    def secret(self, name: str) -> str | None: ...

    def latest_revision(self) -> int: ...

    def find_import(self, kind: str) -> dict[str, Any] | None: ...

    # writes
    def set_height(self, height: int) -> tuple[int, str | None]: ...

    def set_chain_value(self, key: str, value: str) -> None: ...

    def add_node_version(self, version: NodeVersion) -> bool: ...

    def replace_node_versions(self, versions: Sequence[NodeVersion]) -> None: ...

    def set_seed(self, kind: SeedKind, seed: SeedInfo) -> None: ...

    def rotate_seeds(self) -> None: ...

    def set_params(self, kind: str, params: BaseModel) -> None: ...

    def set_upgrade_plan(self, plan: UpgradePlan) -> None: ...

    def add_node(self, node: InferenceNodeConfig) -> None: ...

    def add_nodes(self, nodes: Sequence[InferenceNodeConfig]) -> None: ...

    def update_node(
        self, node: InferenceNodeConfig, *, old: InferenceNodeConfig | None = None
    ) -> InferenceNodeConfig:
        """Replace the node; returns the old value (``old``: already read in this
        transaction, so it is not read again)."""
        ...

    def remove_node(self, node_id: str) -> InferenceNodeConfig: ...

    def set_node_enabled(self, node_id: str, enabled: bool) -> InferenceNodeConfig: ...

    def replace_nodes(
        self, nodes: Sequence[InferenceNodeConfig], *, keep_admin_state: Collection[str] = ()
    ) -> None: ...

    def set_worker_key(
        self, public: str, private: str, *, fingerprint: str, seal: Callable[[str, str], str]
    ) -> None: ...

    def record_import(
        self, kind: str, source_path: str, checksum: str, details: dict[str, Any]
    ) -> None: ...


# --- capabilities: what a database adds to the core ------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Which audit rows to show: each field, when set, must match exactly."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None

    def items(self) -> list[tuple[str, str]]:
        """The (column, value) pairs to match."""
        return [
            (column, value)
            for column, value in (
                ("actor", self.actor),
                ("action", self.action),
                ("target", self.target),
            )
            if value is not None
        ]


@runtime_checkable
class AuditTrail(Protocol):
    """Every change kept, queryable by revision (SPEC §11)."""

    def audit_entries(
        self,
        since: int = 0,
        limit: int = 100,
        *,
        newest: bool = False,
        where: AuditFilter | None = None,
    ) -> list[AuditEntry]: ...

    def prune_audit(self) -> int: ...

    def use_chain_key(self, provider: Callable[[], bytes | None]) -> None: ...

    def audit_checkpoint(self) -> tuple[int, str] | None: ...

    def audit_chain_rows(self, after: int, limit: int) -> list[tuple[Any, ...]]: ...

    def record_restore(
        self, source: str, backup_revision: int, latest: int, backup_chain: str | None = None
    ) -> int: ...


@runtime_checkable
class SealedSecrets(Protocol):
    """Secrets stored sealed under the master key: its parameters, named secrets, per-node
    security keys (SPEC §11)."""

    def key_params(self) -> str | None: ...

    def set_key_params(self, raw: str) -> None: ...

    def set_secret(
        self, name: str, value: str, *, fingerprint: str, old_fingerprint: str | None = None
    ) -> None: ...

    def security_key(self, node_id: str) -> SecurityKeyRow | None: ...

    def security_keys(self) -> list[SecurityKeyRow]: ...

    def put_security_key(
        self,
        node_id: str,
        sealed: str,
        key_version: int,
        *,
        fingerprint: str,
        old_fingerprint: str | None,
    ) -> SecurityKeyRow: ...

    def delete_security_key(self, node_id: str, *, old_fingerprint: str | None) -> bool: ...


@runtime_checkable
class Backups(Protocol):
    """Verified backups, restores and the state's own check (SPEC §10)."""

    @property
    def cipher(self) -> StateCipher | None: ...

    @property
    def backup_dir(self) -> Path: ...

    def backup(self, out: str | os.PathLike[str] | None, *, reason: str) -> BackupInfo: ...

    def kept_backup(self, reason: str, *, keep: int) -> BackupInfo: ...

    def list_backups(self, *, verify: bool = True) -> list[BackupInfo]: ...

    def restore_backup(self, backup: str | os.PathLike[str]) -> RestoreResult: ...

    def opened_backup(
        self, backup: str | os.PathLike[str]
    ) -> contextlib.AbstractContextManager[Any]:
        """The state ``backup`` holds, to read (the core's reads), on a private copy."""
        ...

    def opened_scratch(self) -> contextlib.AbstractContextManager[Any]:
        """A new, empty private state (a SQLite file beside the backups) to fill and read."""
        ...

    def check(self, *, max_backup_age: float | None = None) -> CheckResult: ...


@runtime_checkable
class Tables(Protocol):
    """The state as the tables it is kept in (``GET /admin/v1/export/db``)."""

    def export_tables(self, redacted: str) -> dict[str, list[dict[str, Any]]]: ...


@runtime_checkable
class PredecessorImports(Protocol):
    """What only a database can take from the later predecessor's ``gonka.db``: seed history,
    its other ``kv_config`` keys and its BLS dealer openings."""

    def add_seed_history(self, seeds: Sequence[tuple[SeedKind, SeedInfo]]) -> None: ...

    def put_predecessor_kv(self, key: str, value_json: str) -> None: ...

    def put_bls_openings(
        self, openings: Sequence[BlsDealerOpening], *, seal: Callable[[str, str], str]
    ) -> None: ...


@runtime_checkable
class ApiTokens(Protocol):
    """Scoped API tokens, kept as digests (SPEC §11); shared by every replica of the state."""

    def api_tokens(self) -> list[TokenInfo]: ...

    def api_token_by_digest(self, digest: str) -> TokenInfo | None: ...

    def has_api_tokens(self) -> bool: ...

    def add_api_token(self, name: str, role: Role, digest: str) -> TokenInfo: ...

    def remove_api_token(self, name: str) -> TokenInfo: ...

    def mark_api_token_used(self, name: str, when: str) -> None: ...


@runtime_checkable
class StateBackend(
    StateCore, AuditTrail, SealedSecrets, Backups, Tables, PredecessorImports, ApiTokens, Protocol
):
    """A database backend: the core and every capability (SQLite, PostgreSQL)."""


#: The capabilities a backend may add to :class:`StateCore`, and what each is for (the
#: message of the one :class:`~dapi_config.errors.NotSupportedError` its absence raises).
CAPABILITIES: dict[type, str] = {
    AuditTrail: "audit queries",
    SealedSecrets: "sealed secrets and per-node security keys",
    Backups: "backups, restores and checks of the state",
    Tables: "table exports",
    PredecessorImports: "imports of gonka.db",
    ApiTokens: "scoped API tokens",
}
