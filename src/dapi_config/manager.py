"""ConfigManager: the one facade for library, CLI and HTTP callers.

Static reads come from the YAML file loaded at open; dynamic reads and writes go to the state
store. Every public write validates its input first, then runs in one transaction (or joins the
caller's :meth:`ConfigManager.transaction`), so a failed write changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dapi_config import documents, legacy, node_import
from dapi_config._files import choose_output
from dapi_config._validation import (
    INT64_MAX,
    check_etag,
    check_height,
    check_int,
    check_node_id,
    known_node_id,
    node_etag,
    sets_admin_state,
    validate,
    validate_nodes,
    validated_node,
    with_admin_state_of,
)
from dapi_config.crypto import MasterKeySource
from dapi_config.errors import (
    ConfigError,
    NodeNotFoundError,
    NotSupportedError,
    PreconditionFailedError,
    ValidationError,
)
from dapi_config.export import ExportSettings, PeriodicExporter
from dapi_config.models import (
    REDACTED,
    ApiConfig,
    BandwidthParamsCache,
    ChainNodeConfig,
    InferenceNodeConfig,
    IssuedSecurityKey,
    MLNodeKeyConfig,
    NatsServerConfig,
    NodeVersion,
    PoCParamsCache,
    SecurityKeyInfo,
    SeedInfo,
    StaticConfig,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.secrets import Secrets, has_new_token, keep_redacted_tokens
from dapi_config.settings import Settings, StateMode
from dapi_config.static import LoadedConfig, load_static_config
from dapi_config.store import AuditEntry, Durability, SqliteStore
from dapi_config.store.backend import (
    AUDIT_PAGE_MAX,
    CAPABILITIES,
    AuditTrail,
    Backups,
    PredecessorImports,
    SealedSecrets,
    SeedKind,
    StateBackend,
    StateCore,
    Tables,
)
from dapi_config.store.backup import MANUAL as MANUAL_BACKUP
from dapi_config.store.backup import BackupInfo, backup_dir_for
from dapi_config.store.postgres import PostgresStore
from dapi_config.store.recovery import CheckResult, RestoreResult
from dapi_config.store.sqlcipher import cipher_for

__all__ = [
    "AUDIT_PAGE_MAX",
    "INT64_MAX",
    "MAX_NODE_PAGE",
    "ConfigManager",
    "node_etag",
    "validate_nodes",
]

#: Largest page of nodes one :meth:`ConfigManager.get_nodes_page` call returns.
MAX_NODE_PAGE = 10_000

log = logging.getLogger(__name__)

#: The rollback file's name when ``rollback --out`` names a directory.
ROLLBACK_FILENAME = "config-legacy.yaml"


class ConfigManager:
    """Static configuration plus crash-safe dynamic state.

    Open with :meth:`open` and close with :meth:`close` (or use it as a context manager).
    Thread-safe; several processes may open the same state file.
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        store: StateCore,
        settings: Settings,
        *,
        keys: MasterKeySource | None = None,
    ) -> None:
        self._loaded = loaded
        self._store = store
        self._settings = settings
        # What the backend adds to the core, asked once (None: this state has no such thing,
        # and using it raises the one NotSupportedError of :meth:`_lacking`).
        self._audit = store if isinstance(store, AuditTrail) else None
        self._backups = store if isinstance(store, Backups) else None
        self._tables = store if isinstance(store, Tables) else None
        self._database = store if isinstance(store, StateBackend) else None
        self._exporter: PeriodicExporter | None = None
        self._exporter_lock = threading.Lock()
        #: What the legacy migration did at open (None when the file was already static).
        self.legacy_report: legacy.MigrationReport | None = None
        self._keys = keys or MasterKeySource(store.path, settings.state_key)
        sealed = store if isinstance(store, SealedSecrets) else None
        self._secrets = Secrets(store, self._keys, sealed=sealed, lacking=self._lacking)
        store.use_sealer(self._secrets.sealer())

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

    @classmethod
    def open(
        cls,
        config_path: str | os.PathLike[str] | None = None,
        state_path: str | os.PathLike[str] | None = None,
        *,
        durability: Durability = "full",
        actor: str = "library",
        env: Mapping[str, str] | None = None,
        settings: Settings | None = None,
        migrate_legacy: bool = True,
        read_only: bool = False,
    ) -> ConfigManager:
        """Load the static config and open (creating and migrating) the state file.

        ``settings`` (else :meth:`Settings.from_env` of ``env``, else of the process
        environment) supplies every environment setting: ``config_path`` defaults to
        ``API_CONFIG_PATH`` then ``./config.yaml``; ``state_path`` to ``API_STATE_DB_PATH``
        then ``state.db`` beside the config file. A legacy single-file config is migrated into
        the state file first (unless ``migrate_legacy`` is False), and ``NODE_CONFIG_PATH`` is
        merged once. ``API_STATE_MODE`` picks the backend: ``db`` (default), ``dual`` (plus a
        legacy-layout mirror file), ``yaml`` (the legacy single file, no database).
        Secrets are sealed under the master key from ``API_STATE_KEY`` (>= 16 characters) or
        the key file ``<state>.key``; ``API_AUDIT_KEEP`` sets the audit retention. Whole-file
        encryption follows ``API_STATE_ENCRYPTION``/``API_STATE_KEY``.
        ``read_only`` (commands that only look): nothing is migrated, imported, created or
        rewritten; a missing state file is a :class:`StateUnavailableError`, a legacy file
        not migrated yet a :class:`ConfigError` saying what it holds and how to migrate.
        Raises :class:`ConfigError` (bad static config or legacy values, bad mode or setting,
        bad encryption setting; :class:`MasterKeyError` for a short ``API_STATE_KEY``),
        :class:`SchemaTooNewError`, :class:`StateUnavailableError` (also: wrong or missing
        state-file key).
        """
        settings = settings or Settings.from_env(env)
        loaded = load_static_config(settings.config_file(config_path), settings.static_env)
        location = settings.state_location(state_path, loaded.path)
        if isinstance(location, str):
            return cls._open_shared(
                settings, loaded, location, actor, read_only=read_only, migrate=migrate_legacy
            )
        path = location
        keys = MasterKeySource(path, settings.state_key)
        if read_only:
            return cls._open_read_only(settings, loaded, path, keys, actor)
        migrate = migrate_legacy and settings.state_mode != "yaml"
        checked = None
        if migrate and legacy.dynamic_keys_in(loaded.document):
            # Malformed legacy values stop here, before the state file is even created.
            checked = legacy.parse_legacy_state(loaded.document, str(loaded.path))
        store = _open_backend(settings, loaded, path, keys, durability=durability, actor=actor)
        cm = cls(loaded, store, settings, keys=keys)
        try:
            cm._startup_imports(migrate_legacy=migrate, checked=checked)
            if settings.state_mode == "dual":
                legacy.attach_mirror(cm, legacy.mirror_path_for(path, settings))
        except BaseException:
            cm.close()
            raise
        return cm

    @classmethod
    def _open_shared(
        cls,
        settings: Settings,
        loaded: LoadedConfig,
        url: str,
        actor: str,
        *,
        read_only: bool,
        migrate: bool,
    ) -> ConfigManager:
        """A PostgreSQL state (``API_STATE_URL`` / ``--state postgresql://...``)."""
        if settings.state_mode != "db":
            raise ConfigError(
                f"API_STATE_MODE={settings.state_mode} keeps a legacy-layout file beside a "
                "SQLite state; a PostgreSQL state (API_STATE_URL) runs in db mode: unset "
                "API_STATE_MODE"
            )
        keys = MasterKeySource(url, settings.state_key, shared=True)
        pending = legacy.dynamic_keys_in(loaded.document)
        checked = None
        if pending and not read_only and migrate:
            checked = legacy.parse_legacy_state(loaded.document, str(loaded.path))
        store = _open_backend(settings, loaded, url, keys, actor=actor, read_only=read_only)
        cm = cls(loaded, store, settings, keys=keys)
        if read_only:
            loaded.raw, loaded.parsed = None, None
            return cm
        try:
            cm._startup_imports(migrate_legacy=migrate, checked=checked)
        except BaseException:
            cm.close()
            raise
        return cm

    @classmethod
    def _open_read_only(
        cls,
        settings: Settings,
        loaded: LoadedConfig,
        path: Path,
        keys: MasterKeySource,
        actor: str,
    ) -> ConfigManager:
        pending = settings.state_mode != "yaml" and legacy.dynamic_keys_in(loaded.document)
        if pending and not path.is_file():
            held = legacy.parse_legacy_state(loaded.document, str(loaded.path), warn=False)
            raise ConfigError(
                f"{loaded.path} is a legacy single-file config that was not migrated yet "
                f"(it holds: {legacy.describe_state(held)}); nothing was changed. Run "
                "`dapi-config migrate` (or start the service) to move its state into "
                f"{path}; `dapi-config migrate --dry-run` shows what would move"
            )
        store = _open_backend(settings, loaded, path, keys, actor=actor, read_only=True)
        if pending:
            log.warning(
                "%s still holds dynamic keys (%s) that were not migrated; showing the state "
                "file. `dapi-config migrate` handles them",
                loaded.path,
                ", ".join(pending),
            )
        loaded.raw, loaded.parsed = None, None
        return cls(loaded, store, settings, keys=keys)

    def _startup_imports(
        self, *, migrate_legacy: bool, checked: legacy.LegacyState | None = None
    ) -> None:
        """The legacy single-file migration and the one-time ``NODE_CONFIG_PATH`` merge
        (``checked``: the file's legacy values as :meth:`open` already validated them)."""
        loaded = self._loaded
        if migrate_legacy and legacy.dynamic_keys_in(loaded.document):
            parsed = None if loaded.raw is None else (loaded.raw, loaded.parsed)
            self.legacy_report = legacy.migrate_legacy_file(
                self._store,
                loaded.path,
                before_risky_operation=self.before_risky_operation,
                parsed=parsed,
                checked=checked,
            )
        # The file's text and document are only needed for the migration: don't keep them.
        loaded.raw, loaded.parsed = None, None
        if migrate_legacy:
            gonka_db = legacy.gonka_db_to_import(self._settings, loaded.path)
            if gonka_db is not None and self._store.find_import(legacy.GONKA_DB_KIND) is None:
                self.import_gonka_db(gonka_db)
        node_import.import_node_config_env(
            self._store,
            self._settings.node_config_path,
            mode=self._settings.node_config_mode,
            before_risky_operation=self.before_risky_operation,
        )

    def close(self) -> None:
        """Stop the periodic export (if running) and close the state file. Idempotent."""
        self.stop_periodic_export()
        self._store.close()

    def __enter__(self) -> ConfigManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------------

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

    def acting_as(self, actor: str) -> contextlib.AbstractContextManager[None]:
        """Record ``actor`` (``api``, ``cli``, ``library``, ``migration``) for writes inside."""
        return self._store.acting_as(actor)

    # --- static reads --------------------------------------------------------------------

    @property
    def static_config(self) -> StaticConfig:
        """A copy of the whole static config."""
        return self._loaded.config.model_copy(deep=True)

    def get_api_config(self) -> ApiConfig:
        """The ``api`` section (a copy)."""
        return self._loaded.config.api.model_copy(deep=True)

    def get_chain_node_config(self) -> ChainNodeConfig:
        """The ``chain_node`` section (a copy); ``keyring_password`` from the environment, else
        the one ``secrets seal`` stored sealed."""
        config = self._loaded.config.chain_node.model_copy(deep=True)
        if config.keyring_password is None and (sealed := self.sealed_keyring_password()):
            config.keyring_password = SecretStr(sealed)
        return config

    def sealed_keyring_password(self) -> str | None:
        """The keyring password moved into sealed state by :meth:`seal_secrets` (None: none).
        Raises :class:`MasterKeyError`."""
        return self._secrets.stored_keyring_password()

    def seal_secrets(self) -> legacy.SealReport:
        """Move ``worker_private`` (with its public key) and ``chain_node.KeyringPassword``
        from the config file into sealed state: the file is backed up first, the secrets are
        stored in one durable transaction, then the file is rewritten without them.
        Raises :class:`ConfigError`, :class:`MasterKeyError`, :class:`NotSupportedError`
        (``yaml`` mode keeps them in its file for the old binary)."""
        if self._database is None:
            raise NotSupportedError(
                "API_STATE_MODE=yaml keeps the secrets in its file, where the old binary reads "
                "them; switch to db (or dual) mode to seal them"
            )
        report = legacy.seal_file_secrets(self._loaded.path, self._secrets.seal)
        if "ml_node_key_config.worker_private" in report.sealed:
            # This process still holds the values read at open: the stored pair serves now.
            self._loaded.config.ml_node_key_config.worker_private = ""
        return report

    def get_nats_config(self) -> NatsServerConfig:
        """The ``nats`` section (a copy)."""
        return self._loaded.config.nats.model_copy(deep=True)

    def get_ml_node_key_config(self) -> MLNodeKeyConfig:
        """The worker key pair: the YAML values where non-empty, else the stored pair."""
        config = self._loaded.config.ml_node_key_config.model_copy(deep=True)
        if config.worker_public and config.worker_private:
            return config
        stored = self._secrets.stored_worker_key()
        if stored is not None:
            config.worker_public = config.worker_public or stored["public"]
            config.worker_private = config.worker_private or stored["private"]
        return config

    # --- dynamic reads -------------------------------------------------------------------

    def get_height(self) -> int:
        """The chain height (0 when never set). Served from memory."""
        return self._store.hot_values()[0]

    def get_current_node_version(self) -> str:
        """The current node version ("" when never set). Served from memory."""
        return self._store.hot_values()[1]

    def get_node_versions(self) -> list[NodeVersion]:
        """The node-version schedule, by height."""
        return self._store.node_versions()

    def get_current_seed(self) -> SeedInfo:
        """The current epoch seed (all zeros when unset)."""
        return self._store.seed("current")

    def get_previous_seed(self) -> SeedInfo:
        """The previous epoch seed (all zeros when unset)."""
        return self._store.seed("previous")

    def get_upcoming_seed(self) -> SeedInfo:
        """The upcoming epoch seed (all zeros when unset)."""
        return self._store.seed("upcoming")

    def get_validation_params(self) -> ValidationParamsCache:
        """The cached validation parameters."""
        return self._store.params("validation", ValidationParamsCache)

    def get_poc_params(self) -> PoCParamsCache:
        """The cached proof-of-compute parameters (the predecessor's later ``poc_params``)."""
        return self._store.params("poc", PoCParamsCache)

    def get_bandwidth_params(self) -> BandwidthParamsCache:
        """The cached bandwidth parameters."""
        return self._store.params("bandwidth", BandwidthParamsCache)

    def get_upgrade_plan(self) -> UpgradePlan:
        """The pending upgrade plan (the empty plan when none)."""
        return self._store.upgrade_plan()

    def get_nodes(self) -> list[InferenceNodeConfig]:
        """Every registered inference node, in registration order."""
        return self._store.nodes()

    def get_nodes_page(self, *, limit: int, after: str | None = None) -> list[InferenceNodeConfig]:
        """At most ``limit`` (1-10,000) nodes in registration order, after the node ``after``.
        Raises :class:`ValidationError` (bad limit), :class:`NodeNotFoundError` (unknown
        ``after``)."""
        limit = check_int(limit, "limit", 1, MAX_NODE_PAGE)
        return self._store.nodes_page(None if after is None else known_node_id(after), limit)

    def get_node(self, node_id: str) -> InferenceNodeConfig:
        """One node. Raises :class:`NodeNotFoundError`."""
        return self._store.node(known_node_id(node_id))

    # --- dynamic writes ------------------------------------------------------------------

    def set_height(self, height: int) -> None:
        """Store the chain height and apply the node-version schedule in the same transaction.

        Every scheduled version with height <= ``height`` leaves the schedule; the one with the
        greatest such height becomes the current node version. Raises :class:`ValidationError`.
        """
        h = check_height(height, "height")
        with self._store.transaction():
            self._store.set_height(h)

    def set_current_seed(self, seed: SeedInfo) -> None:
        """Replace the current seed. Raises :class:`ValidationError`."""
        self._set_seed("current", seed)

    def set_previous_seed(self, seed: SeedInfo) -> None:
        """Replace the previous seed. Raises :class:`ValidationError`."""
        self._set_seed("previous", seed)

    def set_upcoming_seed(self, seed: SeedInfo) -> None:
        """Replace the upcoming seed. Raises :class:`ValidationError`."""
        self._set_seed("upcoming", seed)

    def _set_seed(self, kind: SeedKind, seed: SeedInfo) -> None:
        value = validate(SeedInfo, seed, f"{kind} seed")
        with self._store.transaction():
            self._store.set_seed(kind, value)

    def rotate_seeds(self) -> None:
        """Epoch change: previous <- current <- upcoming, upcoming cleared; one transaction."""
        with self._store.transaction():
            self._store.rotate_seeds()

    def set_validation_params(self, params: ValidationParamsCache) -> None:
        """Replace the cached validation parameters. Raises :class:`ValidationError`."""
        value = validate(ValidationParamsCache, params, "validation params")
        with self._store.transaction():
            self._store.set_params("validation", value)

    def set_poc_params(self, params: PoCParamsCache) -> None:
        """Replace the cached proof-of-compute parameters. Raises :class:`ValidationError`."""
        value = validate(PoCParamsCache, params, "poc params")
        with self._store.transaction():
            self._store.set_params("poc", value)

    def set_bandwidth_params(self, params: BandwidthParamsCache) -> None:
        """Replace the cached bandwidth parameters. Raises :class:`ValidationError`."""
        value = validate(BandwidthParamsCache, params, "bandwidth params")
        with self._store.transaction():
            self._store.set_params("bandwidth", value)

    def set_upgrade_plan(self, plan: UpgradePlan) -> None:
        """Replace the upgrade plan. Raises :class:`ValidationError`."""
        value = validate(UpgradePlan, plan, "upgrade plan")
        with self._store.transaction():
            self._store.set_upgrade_plan(value)

    def add_node_version(self, height: int, version: str) -> bool:
        """Schedule ``version`` at ``height``; False when that pair is already scheduled."""
        value = validate(NodeVersion, {"height": height, "version": version}, "node version")
        check_height(height, "height")
        with self._store.transaction():
            return self._store.add_node_version(value)

    def set_nodes(self, nodes: Iterable[InferenceNodeConfig]) -> None:
        """Replace the whole registry atomically.

        A node that stays and whose ``is_enabled`` is not given keeps its admin state, as the
        predecessor's update did (an operator's disabled node stays out of rotation).
        Raises :class:`ValidationError` or :class:`DuplicateNodeError` (nothing changed).
        """
        given = list(nodes)
        keep = {n.id for n in given if not sets_admin_state(n)}
        values = self._before_sealing(validate_nodes(given))
        # A bulk replace can wipe the registry with one call: back up first (SPEC §10).
        self.before_risky_operation("set-nodes")
        with self._store.transaction():
            values = keep_redacted_tokens(values, self._store)
            self._store.replace_nodes(self._secrets.seal_node_tokens(values), keep_admin_state=keep)

    def _before_sealing(self, values: list[InferenceNodeConfig]) -> list[InferenceNodeConfig]:
        """Derive the master key before the write transaction when ``values`` bring a token
        to seal (scrypt takes tens of ms: not while holding the writer lock)."""
        if has_new_token(values):
            self._secrets.warm()
        return values

    def _stored(self, node_id: str) -> InferenceNodeConfig | None:
        try:
            return self._store.node(node_id)
        except NodeNotFoundError:
            return None

    def add_node(self, node: InferenceNodeConfig) -> InferenceNodeConfig:
        """Register a node; returns the stored node.

        Raises :class:`ValidationError`, :class:`DuplicateNodeError`.
        """
        (value,) = self._before_sealing([validated_node(node)])
        with self._store.transaction():
            (value,) = self._secrets.seal_node_tokens(keep_redacted_tokens([value], self._store))
            self._store.add_node(value)
        return value

    def put_node(
        self, node: InferenceNodeConfig, *, if_match: Collection[str] | None = None
    ) -> tuple[InferenceNodeConfig, bool]:
        """Register ``node`` or replace the node with its id, in one transaction; returns the
        stored node and whether it was created (the predecessor's re-POST replaced a node).

        ``if_match`` as in :meth:`update_node`; given for an id that does not exist, it fails
        (:class:`PreconditionFailedError`). A replaced node keeps its admin state unless
        ``is_enabled`` is given (the predecessor's update kept it). Raises
        :class:`ValidationError`.
        """
        keep_state = not sets_admin_state(node)
        (value,) = self._before_sealing([validated_node(node)])
        with self._store.transaction():
            current = self._stored(value.id)  # the one read of the row
            if current is None:
                if if_match is not None:
                    raise PreconditionFailedError(
                        f"node {value.id!r} does not exist, so no If-Match can hold; send the "
                        "request without If-Match to create it. Nothing was written."
                    )
                (value,) = keep_redacted_tokens([value], self._store, {value.id: None})
                (value,) = self._secrets.seal_node_tokens([value])
                self._store.add_node(value)
                return value, True
            value = self._replacing(current, value, if_match=if_match, keep_state=keep_state)
            self._store.update_node(value, old=current)
        return value, False

    def _replacing(
        self,
        current: InferenceNodeConfig,
        value: InferenceNodeConfig,
        *,
        if_match: Collection[str] | None,
        keep_state: bool,
    ) -> InferenceNodeConfig:
        """``value`` ready to replace ``current`` (read in this transaction): its ETag checked,
        a redacted token and (unless given) the admin state taken from it, its token sealed."""
        if if_match is not None:
            check_etag(current, if_match)
        (value,) = keep_redacted_tokens([value], self._store, {current.id: current})
        if keep_state:
            value = with_admin_state_of(current, value)
        (value,) = self._secrets.seal_node_tokens([value])
        return value

    def add_nodes(self, nodes: Iterable[InferenceNodeConfig]) -> list[InferenceNodeConfig]:
        """Register several nodes, all or nothing; returns the stored nodes."""
        values = self._before_sealing(validate_nodes(nodes))
        with self._store.transaction():
            values = keep_redacted_tokens(values, self._store)
            values = self._secrets.seal_node_tokens(values)
            self._store.add_nodes(values)
        return values

    def update_node(
        self, node: InferenceNodeConfig, *, if_match: Collection[str] | None = None
    ) -> InferenceNodeConfig:
        """Replace the node with the same id; returns the stored node.

        ``if_match``: the ETags (see :func:`node_etag`) the caller accepts as the current
        value, ``"*"`` for any; checked in the same transaction as the write. The node keeps
        its admin state unless ``is_enabled`` is given.
        Raises :class:`ValidationError`, :class:`NodeNotFoundError`,
        :class:`PreconditionFailedError` (stale ETag; nothing written).
        """
        keep_state = not sets_admin_state(node)
        (value,) = self._before_sealing([validated_node(node)])
        with self._store.transaction():
            current = self._store.node(value.id)  # the one read of the row
            value = self._replacing(current, value, if_match=if_match, keep_state=keep_state)
            self._store.update_node(value, old=current)
        return value

    def remove_node(
        self, node_id: str, *, if_match: Collection[str] | None = None
    ) -> InferenceNodeConfig:
        """Remove a node; returns it.

        Raises :class:`NodeNotFoundError`, :class:`PreconditionFailedError` (stale ``if_match``,
        as in :meth:`update_node`).
        """
        node_id = known_node_id(node_id)
        with self._store.transaction():
            if if_match is not None:
                check_etag(self._store.node(node_id), if_match)
            return self._store.remove_node(node_id)

    def set_node_enabled(self, node_id: str, enabled: bool) -> InferenceNodeConfig:
        """Enable or disable a node; returns it. Raises :class:`NodeNotFoundError`."""
        if not isinstance(enabled, bool):
            raise ValidationError(
                "enabled: expected true or false",
                [{"field": "enabled", "message": "expected a boolean"}],
            )
        node_id = known_node_id(node_id)
        with self._store.transaction():
            return self._store.set_node_enabled(node_id, enabled)

    def create_worker_key(self) -> str:
        """Generate a new Ed25519 worker pair, store it in the state file; return the public key.

        The private key is stored encrypted under the master key; the pair never goes to the
        YAML file (except in ``API_STATE_MODE=yaml``, where that file is the predecessor's
        single file and holds the pair as the old binary expects). :meth:`get_ml_node_key_config`
        returns it unless the YAML file sets its own keys. Raises :class:`MasterKeyError` when
        the master key does not open this file.
        """
        return self._secrets.create_worker_key()

    def migrate_legacy(self, *, force: bool = False) -> legacy.MigrationReport:
        """Run the legacy migration of the config file now (``open`` does it too).

        ``force``: import the file's dynamic values even though the state took a legacy
        import before, empty values included (the state is backed up first). Raises
        :class:`ConfigError` (malformed legacy values; nothing changed), :class:`BackupError`.
        """
        self.legacy_report = legacy.migrate_legacy_file(
            self._store,
            self._loaded.path,
            before_risky_operation=self.before_risky_operation,
            force=force,
        )
        return self.legacy_report

    def import_gonka_db(self, path: str | os.PathLike[str]) -> legacy.GonkaDbReport:
        """Import the later predecessor's ``gonka.db`` (``open`` does it once, from
        ``API_SQLITE_PATH`` or a ``gonka.db`` beside the config): nodes (tokens sealed), every
        ``kv_config`` key (the worker key sealed), seeds with history, BLS dealer openings
        (sealed); after a backup, in one transaction; a second run is a no-op. Raises
        :class:`ConfigError` (not the predecessor's file, bad values: nothing changed)."""
        if self._database is None:
            raise self._lacking(PredecessorImports)
        self._secrets.warm()
        sealer = self._secrets.sealer()
        return legacy.import_gonka_db(
            self._database,
            Path(path),
            seal_worker=self._secrets.store_worker_key,
            seal=sealer.seal,
            before_risky_operation=self.before_risky_operation,
        )

    def import_nodes_file(
        self, path: str | os.PathLike[str], *, replace: bool = False
    ) -> list[InferenceNodeConfig]:
        """Merge a JSON node file into the registry, all or nothing (``replace``: substitute
        the whole registry). Raises :class:`ConfigError`, :class:`DuplicateNodeError`."""
        return node_import.import_node_file(
            self._store,
            Path(path),
            replace=replace,
            before_risky_operation=self.before_risky_operation,
        )

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

    def write_rollback(
        self,
        out: str | os.PathLike[str],
        *,
        force: bool = True,
        yaml_only: bool = False,
        overwrite_changed_gonka_db: bool = False,
    ) -> Path:
        """Write the legacy single-file YAML (static + dynamic) that the predecessor loads
        (``out`` a file, or a directory for ``config-legacy.yaml`` in it); see
        :meth:`roll_back`, which this calls, for a state upgraded from a ``gonka.db``."""
        return self.roll_back(
            out,
            force=force,
            yaml_only=yaml_only,
            overwrite_changed_gonka_db=overwrite_changed_gonka_db,
        ).yaml

    def roll_back(
        self,
        out: str | os.PathLike[str],
        *,
        force: bool = True,
        yaml_only: bool = False,
        overwrite_changed_gonka_db: bool = False,
    ) -> legacy.RollbackReport:
        """Everything the predecessor needs to run on this state: the legacy YAML at ``out``
        and, for a state upgraded from the later predecessor's ``gonka.db`` (which that binary
        reads instead of the YAML's dynamic keys), that file brought up to date after a backup
        of it, unless ``yaml_only`` (for a release of the YAML era).

        Raises :class:`ConfigError`, nothing written, when the YAML cannot be written, is one
        of :meth:`own_files` or exists and ``force`` is False, or when the ``gonka.db`` is gone
        or changed since the state took it (``overwrite_changed_gonka_db`` replaces it)."""
        target = self.output_path(out, force=force, default_name=ROLLBACK_FILENAME)
        document = legacy.rollback_document(self)
        gonka: legacy.GonkaDbRollback | None = None
        if not yaml_only and self._store.find_import(legacy.GONKA_DB_KIND) is not None:
            path = legacy.check_gonka_db_for_rollback(
                self._store, overwrite_changed=overwrite_changed_gonka_db
            )
            gonka = legacy.roll_back_gonka_db(self._store, path, document)
        return legacy.RollbackReport(legacy.write_rollback(self, target), gonka)

    # --- backups and recovery (SPEC §10) ------------------------------------------------

    @property
    def backup_dir(self) -> Path:
        """Where automatic and scheduled backups go: ``<state dir>/backups`` (for a
        PostgreSQL state, ``<config dir>/backups`` on each replica)."""
        if self._backups is None:
            return backup_dir_for(Path(self._store.path))
        return self._backups.backup_dir

    def backup(
        self, out: str | os.PathLike[str] | None = None, *, reason: str = MANUAL_BACKUP
    ) -> BackupInfo:
        """Take a verified online backup (to ``out``, a file or directory, else the backup
        directory). Safe while others write. Raises :class:`BackupError`,
        :class:`ConfigError` (``out`` is one of :meth:`own_files`, or its directory is
        missing), :class:`NotSupportedError`
        in ``API_STATE_MODE=yaml`` (no database to back up)."""
        if out is None:
            # Into the backup directory: kept like every backup there, the newest
            # API_BACKUP_KEEP of each reason (a loop of POST /backups cannot fill the disk).
            return self._need_backups().kept_backup(reason, keep=self._settings.backup_keep)
        return self._need_backups().backup(self.output_path(out, force=True), reason=reason)

    def backup_before(self, reason: str) -> BackupInfo | None:
        """The automatic ``pre-<reason>`` backup before a risky operation, keeping
        ``API_BACKUP_KEEP`` of that reason (None when there was nothing to back up, and in
        ``yaml`` mode, where the legacy file is copied instead). Raises :class:`BackupError`:
        then do not go ahead."""
        return self._store.backup_before(reason, keep=self._settings.backup_keep)

    def list_backups(self, *, verify: bool = True) -> list[BackupInfo]:
        """Backups of this state, newest first, each checked (``verify=False``: only listed by
        name, for a cheap look at the newest)."""
        return self._need_backups().list_backups(verify=verify)

    def restore_backup(self, backup: str | os.PathLike[str]) -> RestoreResult:
        """Replace the state with ``backup`` after backing up the current state.

        Open readers see the restored state at their next read. Raises :class:`BackupError`
        (missing or damaged backup, nothing changed), :class:`SchemaTooNewError`,
        :class:`StateUnavailableError` (:class:`NotSupportedError` in ``yaml`` mode).
        """
        return self._need_backups().restore_backup(backup)

    def check(self, *, max_backup_age: float | None = None) -> CheckResult:
        """Integrity, schema version, permissions and backup freshness of the state (for a
        PostgreSQL state: the server, the schema version and the backups)."""
        return self._need_backups().check(max_backup_age=max_backup_age)

    # --- secrets (SPEC §11; see :mod:`dapi_config.secrets`) --------------------------------

    def check_master_key(self) -> str:
        """Check that the master key opens this state file's secrets; returns where it comes
        from (``API_STATE_KEY`` or the key file). The service calls it at start-up.

        Raises :class:`MasterKeyError` (wrong or missing key; nothing changed).
        """
        return self._secrets.check_master_key()

    def master_key_problem(self) -> str | None:
        """What the next start would meet with the master key (its key file deleted), or
        None. Cheap: readiness asks it at every probe."""
        return self._secrets.key_problem()

    def create_security_key(self, node_id: str) -> IssuedSecurityKey:
        """Create the first security key of a node (version 1) and return it in full, the
        only time besides rotation that the key is shown.

        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyExistsError` (rotate instead),
        :class:`MasterKeyError`.
        """
        return self._secrets.issue_security_key(check_node_id(node_id), rotate=False)

    def rotate_security_key(self, node_id: str) -> IssuedSecurityKey:
        """Replace a node's security key with a new one (``key_version`` + 1) and return it in
        full; the old key stops verifying at once.

        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyNotFoundError` (create first),
        :class:`MasterKeyError`.
        """
        return self._secrets.issue_security_key(check_node_id(node_id), rotate=True)

    def delete_security_key(self, node_id: str) -> SecurityKeyInfo:
        """Revoke a node's security key; returns what it was (without the key).

        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyNotFoundError`.
        """
        return self._secrets.delete_security_key(check_node_id(node_id))

    def get_security_key_info(self, node_id: str) -> SecurityKeyInfo:
        """A node's key version, timestamps and fingerprint; never the key itself.

        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyNotFoundError`,
        :class:`MasterKeyError`.
        """
        return self._secrets.security_key_info(check_node_id(node_id))

    def get_security_keys(self) -> list[SecurityKeyInfo]:
        """Info (no keys) for every node that has a security key, in registration order."""
        return self._secrets.security_keys()

    def verify_security_key(self, node_id: str, key: str) -> bool:
        """True when ``key`` is the node's current security key (constant-time comparison).

        False for an old (rotated) key, an unknown node or a node without a key.
        Raises :class:`MasterKeyError`.
        """
        if not isinstance(node_id, str) or not isinstance(key, str):
            return False
        return self._secrets.verify_security_key(node_id, key)

    # --- audit trail (§11) ---------------------------------------------------------------

    def wait_for_revision(self, since: int, *, timeout: float) -> int:
        """Wait until a change newer than revision ``since`` has committed (by any process or
        replica), at most ``timeout`` seconds; returns the newest revision then."""
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.005
        while True:
            latest = self._store.latest_revision()
            if latest > since or time.monotonic() >= deadline:
                return latest
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

    def get_audit(
        self, since: int = 0, limit: int = 100, *, newest: bool = False
    ) -> list[AuditEntry]:
        """Audit rows with ``revision > since``, oldest first, at most ``limit`` (1-1000): the
        first of them, or with ``newest`` the most recent (what ``dapi-config audit`` shows).

        Follow changes by passing the last revision seen as ``since``. Values are as recorded:
        secrets appear only as fingerprints. Raises :class:`ValidationError`.
        """
        since = check_int(since, "since", 0, INT64_MAX)
        limit = check_int(limit, "limit", 1, AUDIT_PAGE_MAX)
        if self._audit is None:
            raise self._lacking(AuditTrail)
        return self._audit.audit_entries(since, limit, newest=newest)

    def latest_revision(self) -> int:
        """The newest audit revision (0 before the first change)."""
        return self._store.latest_revision()

    def prune_audit(self) -> int:
        """Apply the audit retention (``API_AUDIT_KEEP``) now; returns the rows deleted.

        Writes also prune, one write in 1,000, in bounded batches; this runs one batch.
        """
        if self._audit is None:
            return 0  # no trail to prune
        with self._store.transaction():
            return self._audit.prune_audit()

    # --- summaries and export ------------------------------------------------------------

    def export_tables(self) -> dict[str, list[dict[str, Any]]]:
        """Every table of the state as rows of plain values (one consistent read), secrets
        redacted: ``GET /admin/v1/export/db``. Raises :class:`NotSupportedError` in ``yaml``
        mode (no database)."""
        if self._tables is None:
            raise self._lacking(Tables)
        return self._tables.export_tables(REDACTED)

    def state_summary(self) -> dict[str, Any]:
        """The dynamic state as plain data (for ``status`` and ``GET /admin/v1/state``), from
        one consistent read."""
        return documents.state_summary(self._store)

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

    def start_periodic_export(
        self,
        interval: float | str | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        keep: int | None = None,
        include_secrets: bool | None = None,
        on_export: Callable[[float], None] | None = None,
    ) -> PeriodicExporter:
        """Export the full config to ``api-config-full.yaml`` (config dir) every ``interval``.

        ``interval``: seconds or a string such as ``"10m"``; unset arguments come from
        ``CONFIG_EXPORT_INTERVAL`` / ``CONFIG_EXPORT_KEEP`` / ``CONFIG_EXPORT_SECRETS``. The first
        export runs at once; failures are logged and retried. A running exporter is replaced.
        Raises :class:`ConfigError` for a bad interval or environment value.
        """
        settings = ExportSettings.from_settings(self._settings).replaced(
            interval=interval, keep=keep, include_secrets=include_secrets
        )
        exporter = PeriodicExporter(self, settings, path=path, on_export=on_export)
        with self._exporter_lock:
            old, self._exporter = self._exporter, exporter
        if old is not None:
            old.stop()
        exporter.start()
        return exporter

    def stop_periodic_export(self) -> None:
        """Stop the periodic exporter (waits for an export in progress). Idempotent."""
        with self._exporter_lock:
            exporter, self._exporter = self._exporter, None
        if exporter is not None:
            exporter.stop()


def _open_backend(
    settings: Settings,
    loaded: LoadedConfig,
    path: Path | str,
    keys: MasterKeySource,
    *,
    durability: Durability = "full",
    actor: str,
    read_only: bool = False,
) -> StateCore:
    """The backend the settings name: PostgreSQL (a URL), the SQLite state file (``db``,
    ``dual``) or the legacy single file itself (``yaml``). The only place that tells them
    apart."""
    if isinstance(path, str):
        return PostgresStore.open(
            path,
            default_actor=actor,
            audit_retention=settings.audit_retention,
            read_only=read_only,
            timeout=settings.pg_timeout,
            # A shared state has no directory of its own: each replica keeps its snapshot
            # files beside its config file.
            backup_dir=backup_dir_for(loaded.path),
        )
    if settings.state_mode == "yaml":
        # Loaded only in this mode (~0.7 MiB resident that the database modes never need).
        from dapi_config.legacy.yaml_mode import YamlStore  # noqa: PLC0415

        return YamlStore.open(
            loaded.path,
            state_path=path,
            default_actor=actor,
            keys=keys,
            parsed=None if loaded.raw is None else (loaded.raw, loaded.parsed),
            read_only=read_only,
        )
    return SqliteStore.open(
        path,
        durability=durability,
        default_actor=actor,
        audit_retention=settings.audit_retention,
        cipher=cipher_for(settings),
        read_only=read_only,
    )
