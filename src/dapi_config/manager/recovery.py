"""Backups, restores and the state's check."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dapi_config import documents, history
from dapi_config.errors import MasterKeyError
from dapi_config.manager._base import ManagerBase
from dapi_config.models import BandwidthParamsCache, PoCParamsCache, ValidationParamsCache
from dapi_config.store.backend import SealedSecrets
from dapi_config.store.backup import MANUAL as MANUAL_BACKUP
from dapi_config.store.backup import BackupInfo, backup_dir_for
from dapi_config.store.chain import ChainReport, verify
from dapi_config.store.recovery import CheckResult, RestoreResult

_PARAMS = {
    "validation": ValidationParamsCache,
    "bandwidth": BandwidthParamsCache,
    "poc": PoCParamsCache,
}


@dataclass
class DeepCheck:
    """What :meth:`BackupsAndChecks.deep_check` found: the walk along the audit chain, and
    each part of the state that differs from the newest value the trail holds for it."""

    chain: ChainReport
    differences: list[history.Difference] = field(default_factory=list)
    parts_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.differences

    @property
    def problems(self) -> list[str]:
        """One line each: the chain's break first, then each difference."""
        broken = [] if self.chain.ok else [self.chain.describe()]
        return broken + [
            f"state differs from its audit trail: {d.describe()}" for d in self.differences
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit_chain": self.chain.describe(),
            "audit_chain_rows": self.chain.rows,
            "state_parts_checked_against_the_trail": self.parts_checked,
            "differences": [
                {"part": d.part, "revision": d.revision, "problem": d.message}
                for d in self.differences
            ],
        }


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

    def deep_check(self) -> DeepCheck:
        """Walk the audit trail's hash chain (SPEC §10) and compare every current value with
        the newest value the trail holds for it (:mod:`dapi_config.history`). Changes nothing.
        Raises :class:`NotSupportedError` in ``yaml`` mode (no trail)."""
        # The trail and the values in one read: a write between them is no difference.
        with self._store.snapshot():
            rows, raw, checkpoint = self._trail()
            current = self._current_parts()
        report = verify(
            raw,
            self._keys.chain_key(),
            start="" if checkpoint is None else checkpoint[1],
            start_revision=None if checkpoint is None else checkpoint[0],
        )
        known = history.newest_values(rows, whole=checkpoint is None)
        return DeepCheck(report, history.differences(known, current), len(known))

    def _current_parts(self) -> dict[str, Any]:
        """The state as :mod:`dapi_config.history` names its parts (inside a snapshot)."""
        store = self._store
        parts: dict[str, Any] = {f"node:{n.id}": n.model_dump(mode="json") for n in store.nodes()}
        parts.update({f"chain:{k}": v for k, v in store.chain_state().items()})
        parts["schedule"] = [v.model_dump(mode="json") for v in store.node_versions()]
        for kind in ("current", "previous", "upcoming"):
            parts[f"seed:{kind}"] = store.seed(kind).model_dump(mode="json")
        for kind, model in _PARAMS.items():
            parts[f"params:{kind}"] = store.params(kind, model).model_dump(mode="json")
        parts["upgrade_plan"] = store.upgrade_plan().model_dump(mode="json")
        if isinstance(store, SealedSecrets):
            usable = self._secrets.key_problem() is None
            for row in store.security_keys():
                part: dict[str, Any] = {"key_version": row.key_version}
                if usable:
                    try:
                        part["key"] = self._secrets.key_fingerprint(row)
                    except MasterKeyError:  # the master key opens the others: this one changed
                        part["key"] = "<cannot be opened under the master key>"
                parts[f"key:{row.node_id}"] = part
        return parts
