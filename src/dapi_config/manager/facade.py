"""ConfigManager: the one facade for library, CLI and HTTP callers.

Static reads come from the YAML file loaded at open; dynamic reads and writes go to the state
store. Every public write validates its input first, then runs in one transaction (or joins the
caller's :meth:`ConfigManager.transaction`), so a failed write changes nothing.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr

from dapi_config import legacy
from dapi_config._validation import (
    INT64_MAX,
    check_height,
    check_int,
    node_etag,
    validate_nodes,
)
from dapi_config.errors import ValidationError
from dapi_config.export import ExportSettings, PeriodicExporter
from dapi_config.manager.access import ApiAccess
from dapi_config.manager.keys import SecretsAndKeys
from dapi_config.manager.kinds import StateKinds
from dapi_config.manager.nodes import MAX_NODE_PAGE, NodeRegistry
from dapi_config.manager.opening import open_state
from dapi_config.manager.past import PastStates
from dapi_config.manager.predecessor import PredecessorBridge
from dapi_config.manager.recovery import BackupsAndChecks
from dapi_config.models import (
    PRINTABLE_PATTERN,
    REDACTED,
    ApiConfig,
    BandwidthParamsCache,
    ChainNodeConfig,
    MLNodeKeyConfig,
    NatsServerConfig,
    NodeVersion,
    PoCParamsCache,
    SeedInfo,
    StaticConfig,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.settings import Settings
from dapi_config.store import AuditEntry, Durability
from dapi_config.store.backend import (
    AUDIT_PAGE_MAX,
    AuditFilter,
    AuditTrail,
    SeedKind,
    Tables,
)

__all__ = [
    "AUDIT_PAGE_MAX",
    "INT64_MAX",
    "MAX_NODE_PAGE",
    "ConfigManager",
    "node_etag",
    "validate_nodes",
]


class ConfigManager(
    NodeRegistry,
    StateKinds,
    BackupsAndChecks,
    PastStates,
    SecretsAndKeys,
    PredecessorBridge,
    ApiAccess,
):
    """Static configuration plus crash-safe dynamic state.

    Open with :meth:`open` and close with :meth:`close` (or use it as a context manager).
    Thread-safe; several processes may open the same state file. The parts it is made of:
    :class:`~.nodes.NodeRegistry`, :class:`~.kinds.StateKinds`,
    :class:`~.recovery.BackupsAndChecks`,
    :class:`~.keys.SecretsAndKeys`, :class:`~.predecessor.PredecessorBridge`,
    :class:`~.access.ApiAccess`; opening is
    :mod:`.opening`'s.
    """

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
        strict: bool = False,
    ) -> ConfigManager:
        """Load the static config and open (creating and migrating) the state file.

        ``settings`` (else :meth:`Settings.from_env` of ``env``, else of the process
        environment) supplies every environment setting: ``config_path`` defaults to
        ``API_CONFIG_PATH`` then ``./config.yaml``; ``state_path`` to ``API_STATE_DB_PATH``
        then ``state.db`` beside the config file. The start-up imports run next
        (:meth:`run_imports`: a legacy single-file config migrated into the state, the
        later predecessor's ``gonka.db``, ``NODE_CONFIG_PATH`` merged once) unless
        ``migrate_legacy`` is False: then none runs, and the caller runs them.
        ``API_STATE_MODE`` picks the backend: ``db`` (default), ``dual`` (plus a
        legacy-layout mirror file), ``yaml`` (the legacy single file, no database).
        Secrets are sealed under the master key from ``API_STATE_KEY`` (>= 16 characters) or
        the key file ``<state>.key``; ``API_AUDIT_KEEP`` sets the audit retention. Whole-file
        encryption follows ``API_STATE_ENCRYPTION``/``API_STATE_KEY``.
        ``read_only`` (commands that only look): nothing is migrated, imported, created or
        rewritten; a missing state file is a :class:`StateUnavailableError`, a legacy file
        not migrated yet a :class:`ConfigError` saying what it holds and how to migrate.
        ``strict``: a write given a field no model knows (``maxconcurrent`` for
        ``max_concurrent``) raises :class:`ValidationError` naming it, as the CLI and the HTTP
        API do; by default such fields are kept with the value (a predecessor's later fields
        are never dropped), so fields a predecessor's files brought are refused in a strict
        write too.
        Raises :class:`ConfigError` (bad static config or legacy values, bad mode or setting,
        bad encryption setting; :class:`MasterKeyError` for a short ``API_STATE_KEY``),
        :class:`SchemaTooNewError`, :class:`StateUnavailableError` (also: wrong or missing
        state-file key).
        """
        settings = settings or Settings.from_env(env)
        opened = open_state(
            settings,
            config_path,
            state_path,
            durability=durability,
            actor=actor,
            read_only=read_only,
        )
        cm = cls(
            opened.loaded,
            opened.store,
            settings,
            keys=opened.keys,
            pending=opened.pending,
            strict=strict,
        )
        if read_only:
            return cm
        try:
            if migrate_legacy:
                cm.run_imports()
            if settings.state_mode == "dual":
                legacy.attach_mirror(cm, legacy.mirror_path_for(cm.state_path, settings))
        except BaseException:
            cm.close()
            raise
        return cm

    def close(self) -> None:
        """Stop the periodic export (if running) and close the state file. Idempotent."""
        self.stop_periodic_export()
        self._store.close()

    def __enter__(self) -> ConfigManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        value = self._given(SeedInfo, seed, f"{kind} seed")
        with self._store.transaction():
            self._store.set_seed(kind, value)

    def rotate_seeds(self) -> None:
        """Epoch change: previous <- current <- upcoming, upcoming cleared; one transaction."""
        with self._store.transaction():
            self._store.rotate_seeds()

    def set_validation_params(self, params: ValidationParamsCache) -> None:
        """Replace the cached validation parameters. Raises :class:`ValidationError`."""
        value = self._given(ValidationParamsCache, params, "validation params")
        with self._store.transaction():
            self._store.set_params("validation", value)

    def set_poc_params(self, params: PoCParamsCache) -> None:
        """Replace the cached proof-of-compute parameters. Raises :class:`ValidationError`."""
        value = self._given(PoCParamsCache, params, "poc params")
        with self._store.transaction():
            self._store.set_params("poc", value)

    def set_bandwidth_params(self, params: BandwidthParamsCache) -> None:
        """Replace the cached bandwidth parameters. Raises :class:`ValidationError`."""
        value = self._given(BandwidthParamsCache, params, "bandwidth params")
        with self._store.transaction():
            self._store.set_params("bandwidth", value)

    def set_upgrade_plan(self, plan: UpgradePlan) -> None:
        """Replace the upgrade plan. Raises :class:`ValidationError`."""
        value = self._given(UpgradePlan, plan, "upgrade plan")
        with self._store.transaction():
            self._store.set_upgrade_plan(value)

    def add_node_version(self, height: int, version: str) -> bool:
        """Schedule ``version`` at ``height``; False when that pair is already scheduled."""
        value = self._given(NodeVersion, {"height": height, "version": version}, "node version")
        check_height(height, "height")
        with self._store.transaction():
            return self._store.add_node_version(value)

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
        self,
        since: int = 0,
        limit: int = 100,
        *,
        newest: bool = False,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditEntry]:
        """Audit rows with ``revision > since``, oldest first, at most ``limit`` (1-1000): the
        first of them, or with ``newest`` the most recent (what ``dapi-config audit`` shows);
        ``actor``, ``action``, ``target``: only the rows with exactly that value
        (``api:grafana``, ``remove_node``, a node id).

        Follow changes by passing the last revision seen as ``since``. Values are as recorded:
        secrets appear only as fingerprints. Raises :class:`ValidationError`.
        """
        since = check_int(since, "since", 0, INT64_MAX)
        limit = check_int(limit, "limit", 1, AUDIT_PAGE_MAX)
        for name, value in (("actor", actor), ("action", action), ("target", target)):
            if value is not None and (
                not isinstance(value, str)
                or len(value) > 1024
                or not re.fullmatch(PRINTABLE_PATTERN, value)
            ):
                message = "expected text of at most 1024 characters, no control characters"
                raise ValidationError(
                    f"invalid {name}: {message}", [{"field": name, "message": message}]
                )
        if self._audit is None:
            raise self._lacking(AuditTrail)
        where = AuditFilter(actor=actor, action=action, target=target)
        return self._audit.audit_entries(since, limit, newest=newest, where=where)

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

    def export_tables(self) -> dict[str, list[dict[str, Any]]]:
        """Every table of the state as rows of plain values (one consistent read), secrets
        redacted: ``GET /admin/v1/export/db``. Raises :class:`NotSupportedError` in ``yaml``
        mode (no database)."""
        if self._tables is None:
            raise self._lacking(Tables)
        return self._tables.export_tables(REDACTED)

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
