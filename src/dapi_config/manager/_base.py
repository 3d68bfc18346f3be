"""The manager's shared ground: what it holds, the capabilities of its backend asked once,
and the plumbing every part uses (transactions, hooks, the risky-operation backup, outputs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dapi_config import documents, history, legacy
from dapi_config._files import choose_output
from dapi_config._validation import ModelT, refuse_unknown_fields, validate
from dapi_config.crypto import MasterKeySource
from dapi_config.errors import (
    NotSupportedError,
)
from dapi_config.export import PeriodicExporter
from dapi_config.secrets import Secrets
from dapi_config.settings import Settings, StateMode
from dapi_config.static import LoadedConfig
from dapi_config.store.backend import (
    CAPABILITIES,
    ApiTokens,
    AuditTrail,
    Backups,
    SealedSecrets,
    StateBackend,
    StateCore,
    Tables,
)
from dapi_config.store.backup import BackupInfo

log = logging.getLogger("dapi_config.manager")


class ManagerBase:
    """What every part of the manager shares: the static config as loaded, the backend (its
    core, and the capabilities it adds, asked once here), the settings and the secrets."""

    def __init__(
        self,
        loaded: LoadedConfig,
        store: StateCore,
        settings: Settings,
        *,
        keys: MasterKeySource | None = None,
        pending: legacy.LegacyFile | None = None,
        strict: bool = False,
    ) -> None:
        self._loaded = loaded
        #: Refuse fields no model knows in what a write is given (see :meth:`_given`).
        self._strict = strict
        #: The config file's dynamic keys as read at open, until the migration takes them.
        self._pending = pending
        self._store = store
        self._settings = settings
        # What the backend adds to the core, asked once (None: this state has no such thing,
        # and using it raises the one NotSupportedError of :meth:`_lacking`).
        self._audit = store if isinstance(store, AuditTrail) else None
        self._backups = store if isinstance(store, Backups) else None
        self._tables = store if isinstance(store, Tables) else None
        self._database = store if isinstance(store, StateBackend) else None
        self._tokens = store if isinstance(store, ApiTokens) else None
        self._exporter: PeriodicExporter | None = None
        self._exporter_lock = threading.Lock()
        #: When this process last wrote each API token's "last used" time (monotonic).
        self._token_uses: dict[str, float] = {}
        self._token_uses_lock = threading.Lock()
        #: What the legacy migration did at open (None when the file was already static).
        self.legacy_report: legacy.MigrationReport | None = None
        self._keys = keys or MasterKeySource(store.path, settings.state_key)
        sealed = store if isinstance(store, SealedSecrets) else None
        self._secrets = Secrets(store, self._keys, sealed=sealed, lacking=self._lacking)
        store.use_sealer(self._secrets.sealer())
        if self._audit is not None:
            self._audit.use_chain_key(self._keys.chain_key)

    def _given(self, model: type[ModelT], value: Any, what: str) -> ModelT:
        """``value`` validated as ``model`` for a write; in strict mode a field no model
        knows is an error too. Raises :class:`ValidationError`."""
        checked = validate(model, value, what)
        if self._strict:
            refuse_unknown_fields([checked], what)
        return checked

    def _lacking(self, capability: type) -> NotSupportedError:
        """The error for a capability this state does not have (SPEC: the one typed error)."""
        return NotSupportedError(
            f"{CAPABILITIES[capability]} need the state database, and "
            f"API_STATE_MODE={self._settings.state_mode} runs without one (the state is in "
            f"{self._store.path})"
        )

    def _need_backups(self) -> Backups:
        if self._backups is None:
            raise self._lacking(Backups)
        return self._backups

    @property
    def config_path(self) -> Path:
        """The static YAML file."""
        return self._loaded.path

    @property
    def state_path(self) -> Path:
        """The SQLite state file (for a PostgreSQL state, see :attr:`state_location`)."""
        return Path(self._store.path)

    @property
    def state_location(self) -> str:
        """Where the state is: the state file's path, or the PostgreSQL URL (no password)."""
        return self._store.path

    @property
    def backend(self) -> StateCore:
        """The state backend in use (SQLite, PostgreSQL, or the legacy YAML file in ``yaml``
        mode): its core; what it adds is reached through the manager."""
        return self._store

    @property
    def supports_backups(self) -> bool:
        """Whether this state has backups (every state database; not ``yaml`` mode)."""
        return self._backups is not None

    @property
    def state_mode(self) -> StateMode:
        """``db``, ``dual`` or ``yaml`` (``API_STATE_MODE``)."""
        return self._settings.state_mode

    @property
    def settings(self) -> Settings:
        """The environment settings this manager was opened with."""
        return self._settings

    @property
    def predecessor_values(self) -> list[str]:
        """What the config file holds that the predecessor's decoder read its own way (a port
        of 0 read as unset), one note each, as found at open."""
        return list(self._loaded.predecessor_values)

    @property
    def loaded_document(self) -> dict[str, Any]:
        """The config file's top-level mapping as read at open (plain data)."""
        return self._loaded.document

    def before_risky_operation(self, reason: str) -> None:
        """The one call made before a risky operation (``legacy-migration``,
        ``node-file-replace``, ``set-nodes``): an automatic ``pre-<reason>`` backup of the
        state (in ``yaml`` mode, of the legacy file). Raises :class:`BackupError`: then stop."""
        self.backup_before(reason)

    def on_commit(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook()`` after every committed change (a failing hook is logged, never
        raised: the change is durable). Returns the function that removes it."""
        return self._store.on_commit(hook)

    def observe_writes(self, observer: Callable[[float, bool], None]) -> Callable[[], None]:
        """Call ``observer(seconds, committed)`` after every write transaction (metrics).
        Returns the function that removes it."""
        return self._store.observe_transactions(observer)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Make the writes inside the block one atomic transaction (nesting allowed).

        ``with cm.transaction(): cm.set_height(5); cm.rotate_seeds()`` commits both or neither.
        """
        return self._store.transaction()

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """Make the reads inside the block see one committed state, without blocking writers
        (several reads then cost one read transaction, not one each)."""
        return self._store.snapshot()

    def acting_as(self, actor: str) -> contextlib.AbstractContextManager[None]:
        """Record ``actor`` (``api``, ``cli``, ``library``, ``migration``) for writes inside."""
        return self._store.acting_as(actor)

    def own_files(self) -> list[Path]:
        """Every file this state depends on: the state and its companions, the key file, the
        config file, the backups. No output of the product is ever written over one."""
        return [*self._store.own_files(), self._keys.key_file, self.config_path]

    def output_path(
        self,
        out: str | os.PathLike[str],
        *,
        force: bool = False,
        default_name: str | None = None,
    ) -> Path:
        """Where a command's ``--out`` writes: never over :meth:`own_files`; an existing file
        only with ``force``; ``dir/`` is a directory (created), holding ``default_name`` when
        given. Raises :class:`ConfigError`."""
        return choose_output(
            out, protected=self.own_files(), force=force, default_name=default_name
        )

    def backup_before(self, reason: str) -> BackupInfo | None:
        """The automatic ``pre-<reason>`` backup before a risky operation, keeping
        ``API_BACKUP_KEEP`` of that reason (None when there was nothing to back up, and in
        ``yaml`` mode, where the legacy file is copied instead). Raises :class:`BackupError`:
        then do not go ahead."""
        return self._store.backup_before(reason, keep=self._settings.backup_keep)

    def sealed_keyring_password(self) -> str | None:
        """The keyring password moved into sealed state by :meth:`seal_secrets` (None: none).
        Raises :class:`MasterKeyError`."""
        return self._secrets.stored_keyring_password()

    def export_full_config(
        self, *, include_secrets: bool = False, include_security_keys: bool = True
    ) -> dict[str, Any]:
        """The merged static + dynamic configuration in the predecessor's single-file layout.

        Secrets (worker private key, admin token, per-node security keys under
        ``mlnode_security``, present only when some node has a key) are replaced by
        ``<redacted>`` unless ``include_secrets``; ``include_security_keys=False`` leaves the
        ``mlnode_security`` section out (the rollback file: the old binary has no use for it).
        The keyring password is never exported.
        Raises :class:`MasterKeyError` only when ``include_secrets`` and the key is wrong.
        """
        return documents.full_config(
            self._loaded.config,
            self._store,
            self._secrets,
            include_secrets=include_secrets,
            include_security_keys=include_security_keys,
        )

    def _raw_trail(self) -> tuple[list[tuple[Any, ...]], tuple[int, str] | None]:
        """The whole audit trail as stored (see :meth:`AuditTrail.audit_chain_rows`) and the
        retention's checkpoint, from one consistent read (the caller's, when inside one).
        Raises :class:`NotSupportedError` in ``yaml`` mode."""
        if self._audit is None:
            raise self._lacking(AuditTrail)
        trail = self._audit
        with self._store.snapshot():
            checkpoint = trail.audit_checkpoint()
            raw: list[tuple[Any, ...]] = []
            after = 0 if checkpoint is None else checkpoint[0]
            while batch := trail.audit_chain_rows(after, 5000):
                raw.extend(batch)
                after = int(batch[-1][0])
        return raw, checkpoint

    def _trail(
        self,
    ) -> tuple[list[history.TrailRow], list[tuple[Any, ...]], tuple[int, str] | None]:
        """:meth:`_raw_trail`, and its rows decoded."""
        raw, checkpoint = self._raw_trail()
        rows = [
            history.TrailRow(int(r[0]), str(r[3]), str(r[4]), _decoded(r[5]), _decoded(r[6]), r[7])
            for r in raw
        ]
        return rows, raw, checkpoint

    def state_summary(self) -> dict[str, Any]:
        """The dynamic state as plain data (for ``status`` and ``GET /admin/v1/state``), from
        one consistent read."""
        return documents.state_summary(self._store)


def _decoded(text: Any) -> Any:
    return None if text is None else json.loads(text)
