"""Backups, restores and the state's check."""

from __future__ import annotations

import os
from pathlib import Path

from dapi_config import documents
from dapi_config.manager._base import ManagerBase
from dapi_config.store.backup import MANUAL as MANUAL_BACKUP
from dapi_config.store.backup import BackupInfo, backup_dir_for
from dapi_config.store.recovery import CheckResult, RestoreResult


class BackupsAndChecks(ManagerBase):
    """Backups, restores and checks of the state (SPEC §10); a state without them (``yaml``
    mode) raises the one :class:`NotSupportedError`."""

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

    def preview_restore(self, backup: str | os.PathLike[str]) -> list[str]:
        """What :meth:`restore_backup` of ``backup`` would change, one line each (empty:
        the backup holds the state as it is now), with the revisions it would undo first.
        Changes nothing. Raises :class:`BackupError` (missing or damaged backup)."""
        backups = self._need_backups()
        with self._store.snapshot():
            now = documents.state_summary(self._store)
            now_nodes = self._store.nodes()
        with backups.opened_backup(backup) as stored:
            then = documents.state_summary(stored)
            then_nodes = stored.nodes()
        changes = documents.state_diff(now, now_nodes, then, then_nodes)
        undone = (
            [f"revisions {then['revision'] + 1}-{now['revision']} undone (they stay in the audit)"]
            if now["revision"] > then["revision"]
            else []
        )
        return undone + changes

    def check(self, *, max_backup_age: float | None = None) -> CheckResult:
        """Integrity, schema version, permissions and backup freshness of the state (for a
        PostgreSQL state: the server, the schema version and the backups)."""
        return self._need_backups().check(max_backup_age=max_backup_age)
