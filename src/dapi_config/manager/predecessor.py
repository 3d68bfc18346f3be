"""The predecessor's files in (start-up imports) and out (rollback)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dapi_config import legacy, node_import
from dapi_config.errors import DapiConfigError
from dapi_config.manager._base import ManagerBase
from dapi_config.store.backend import (
    PredecessorImports,
)

#: The rollback file's name when ``rollback --out`` names a directory.
ROLLBACK_FILENAME = "config-legacy.yaml"

log = logging.getLogger("dapi_config.legacy")


@dataclass
class StartupImports:
    """What :meth:`PredecessorBridge.run_imports` did (None: that import had nothing to do)."""

    migration: legacy.MigrationReport | None = None
    gonka_db: legacy.GonkaDbReport | None = None


class PredecessorBridge(ManagerBase):
    """What comes from the predecessor and goes back to it: the imports that run at start-up
    (its YAML file, its ``gonka.db``, its node file), and the rollback."""

    def run_imports(
        self, *, force: bool = False, gonka_db: str | os.PathLike[str] | None = None
    ) -> StartupImports:
        """The start-up imports, in this order (:meth:`open` runs them unless told not to):
        the config file's dynamic keys migrated into the state (``force`` as in
        :meth:`migrate_legacy`), the later predecessor's ``gonka.db`` (``gonka_db``, else the
        one ``API_SQLITE_PATH`` names or that lies beside the config, once), then
        ``NODE_CONFIG_PATH`` merged once. ``API_STATE_MODE=yaml`` runs only the last: its file
        is the state. Raises what each import raises (nothing of that import changed)."""
        done = StartupImports()
        if self._settings.state_mode != "yaml":
            if self._pending is not None:  # the file had dynamic keys when it was opened
                done.migration = self.migrate_legacy(force=force)
            path = Path(gonka_db) if gonka_db is not None else None
            if path is None:
                found = legacy.gonka_db_to_import(self._settings, self._loaded.path)
                if found is not None and self._store.find_import(legacy.GONKA_DB_KIND) is None:
                    path = found
            if path is not None:
                done.gonka_db = self.import_gonka_db(path)
        node_import.import_node_config_env(
            self._store,
            self._settings.node_config_path,
            mode=self._settings.node_config_mode,
            before_risky_operation=self.before_risky_operation,
        )
        return done

    def migrate_legacy(self, *, force: bool = False) -> legacy.MigrationReport:
        """Run the legacy migration of the config file now (``open`` does it too).

        ``force``: import the file's dynamic values even though the state took a legacy
        import before, empty values included (the state is backed up first). Raises
        :class:`ConfigError` (malformed legacy values; nothing changed), :class:`BackupError`.
        """
        # The file as read at open when it still has it to migrate (read and parsed once).
        source = self._pending if self._pending is not None else self._loaded.path
        self.legacy_report = legacy.migrate_legacy_file(
            self._store,
            source,
            before_risky_operation=self.before_risky_operation,
            force=force,
        )
        self._pending = None  # taken: a later call reads the file as it is then
        if self.legacy_report.action in ("migrated", "resumed") and self._backups is not None:
            # The migrated state's first verified backup: what `check` looks for, and the way
            # back to this point should a later change go wrong.
            try:
                self.legacy_report.state_backup = str(
                    self._backups.kept_backup(
                        "post-migration", keep=self._settings.backup_keep
                    ).path
                )
            except DapiConfigError as exc:  # the migration is done and durable: say, go on
                log.warning("the migrated state could not be backed up: %s", exc)
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
