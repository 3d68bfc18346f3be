"""The state as it was at any revision, and point-in-time recovery (SPEC §10).

The state right after revision R is rebuilt in a private state file beside the backups: from
the empty state when the trail is whole, else from the newest sound backup of R's history at
or before R, plus the trail's rows after it (:func:`history.replay`).
The same shapes as today's reads come out of it. A restore to R writes, in one transaction
after a backup of the current state, an entry naming R (the revisions after it marked undone,
as a backup's restore does), then each part that differs from R's value: revisions keep
increasing and every process sees it at its next read. Node tokens, the worker key and the API
tokens are never in the trail: tokens and secrets stay as they are now (a node keeps the sealed
token it has, or had in the backup); per-node security keys stay too, unless
``include_keys`` brings back the keys of the backup the rebuild started from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, SecretStr

from dapi_config import documents, history
from dapi_config._validation import INT64_MAX, check_int
from dapi_config.catalogue import BY_NAME, KINDS
from dapi_config.errors import (
    BackupError,
    HistoryUnavailableError,
    NodeNotFoundError,
    RevisionNotFoundError,
    ValidationError,
)
from dapi_config.manager._base import ManagerBase
from dapi_config.models import InferenceNodeConfig
from dapi_config.store.backend import AuditTrail, SealedSecrets, StateCore
from dapi_config.store.backup import BackupInfo
from dapi_config.store.queries import HEIGHT


class PastStates(ManagerBase):
    """Reads of the state at a revision, and restores to one (see the module doc)."""

    def state_summary_at(self, revision: int) -> dict[str, Any]:
        """:meth:`state_summary` as it was right after ``revision``."""
        with self._state_at(revision) as past:
            summary = documents.state_summary(past.store)
        summary["revision"] = past.revision
        return summary

    def state_value_at(self, name: str, revision: int) -> BaseModel:
        """:meth:`state_value` of the kind ``name`` as it was right after ``revision``."""
        kind = BY_NAME.get(name)
        if kind is None:
            raise ValidationError(f"unknown state kind {name!r}")
        with self._state_at(revision) as past:
            return kind.read(past.store)

    def nodes_at(self, revision: int) -> list[InferenceNodeConfig]:
        """The node registry as it was right after ``revision`` (tokens redacted as ever)."""
        with self._state_at(revision) as past:
            return past.store.nodes()

    def revision_at_time(self, when: datetime) -> int:
        """The newest revision committed at or before ``when`` (timezone-aware). Raises
        :class:`ValidationError` for a time without a zone, :class:`HistoryUnavailableError`
        when ``when`` is before every revision the retention kept."""
        if when.tzinfo is None:
            raise ValidationError("the time needs a zone (2026-12-07T13:40:00Z)")
        raw, checkpoint = self._raw_trail()
        found = [int(r[0]) for r in raw if datetime.fromisoformat(str(r[1])) <= when]
        if found:
            return found[-1]
        if checkpoint is None:
            return 0  # before the first change: the new, empty state
        oldest = f"r{raw[0][0]}, {raw[0][1]}" if raw else "none"
        raise HistoryUnavailableError(
            f"no kept revision at or before {when.isoformat()} (the oldest kept: {oldest})"
        )

    def preview_restore_to_revision(self, revision: int) -> list[str]:
        """What :meth:`restore_to_revision` would change, one line per part (empty: nothing).
        Changes nothing."""
        with self._state_at(revision) as past:
            return documents.state_diff(
                documents.state_summary(self._store),
                self._store.nodes(),
                documents.state_summary(past.store),
                past.store.nodes(),
            )

    def restore_to_revision(self, revision: int, *, include_keys: bool = False) -> int:
        """Bring the state back to how it was right after ``revision`` (see the module doc);
        returns the restore's own revision. ``include_keys``: also the per-node security keys
        of the backup the rebuild started from. Raises :class:`RevisionNotFoundError` (not
        reached yet) or :class:`HistoryUnavailableError` (cannot be rebuilt); nothing changed
        then."""
        with self._state_at(revision, keys=include_keys) as past:
            self.before_risky_operation("restore")
            store, trail = self._store, self._audit
            if trail is None:  # _state_at read the trail: never so
                raise self._lacking(AuditTrail)
            with store.transaction(durable=True):
                latest = store.latest_revision()
                restored = trail.record_restore(
                    f"revision {past.revision}", past.revision, latest, past.chain
                )
                _bring_back(store, past.store)
                if include_keys:
                    self._bring_back_keys(past)
        return restored

    # --- the rebuild --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _state_at(self, revision: int, *, keys: bool = False) -> Iterator[_Past]:
        backups = self._need_backups()
        rows, _, checkpoint = self._trail()
        latest = rows[-1].revision if rows else (checkpoint[0] if checkpoint else 0)
        revision = check_int(revision, "revision", 0, INT64_MAX)
        if revision > latest:
            raise RevisionNotFoundError(
                f"revision {revision} does not exist yet (the latest is r{latest})"
            )
        kept, from_start = history.timeline(rows, revision)
        # The base must hold everything the trail cannot give: the rows the retention cut,
        # the history before a restore of another state's backup, a value kept as a digest.
        floor = 0 if checkpoint is None else checkpoint[0]
        if not from_start and kept:
            floor = max(floor, kept[0].revision)
        for row in kept:
            if history.too_large(row):
                floor = max(floor, row.revision)
        chain = next((r.chain for r in reversed(rows) if r.revision == revision), None)
        # A backup of this history when the trail alone cannot give the state (checking every
        # backup costs more than replaying a trail the retention keeps bounded).
        base = self._base_backup(kept, floor, revision) if floor > 0 or keys else None
        tokens = self._token_now
        opened = backups.opened_scratch() if base is None else backups.opened_backup(base.path)
        with opened as store:
            after = 0 if base is None else base.revision
            history.replay(store, [r for r in kept if r.revision > after], tokens=tokens)
            yield _Past(store, revision, chain, base, kept)

    def _base_backup(self, kept: list[history.TrailRow], floor: int, revision: int) -> BackupInfo:
        """The newest sound backup of ``kept``'s history between ``floor`` and ``revision``
        (its newest audit row is this trail's row of that revision)."""
        ours = {r.revision: r.chain for r in kept}
        backups = self._need_backups()
        for info in backups.list_backups(verify=True):  # newest first
            if not info.ok or not floor <= info.revision <= revision or info.revision not in ours:
                continue  # out of range, or a backup of changes a restore undid
            try:
                with backups.opened_backup(info.path) as store:
                    head = store.audit_chain_rows(info.revision - 1, 1)
            except BackupError:
                continue  # damaged: the next one
            if head and head[0][7] == ours[info.revision]:
                return info
        raise HistoryUnavailableError(
            f"the state at r{revision} cannot be rebuilt: it needs a verified backup of this "
            f"history taken between r{floor} and r{revision} (the trail before r{floor} was "
            "cut by the retention, or keeps a value only as its digest), and there is none"
        )

    def _token_now(self, node_id: str) -> SecretStr | None:
        try:
            return self._store.node(node_id).auth_token
        except NodeNotFoundError:
            return None

    def _bring_back_keys(self, past: _Past) -> None:
        if past.base is None:
            raise HistoryUnavailableError("no backup holds the keys of that revision")
        changed = [
            r.target
            for r in past.rows
            if r.revision > past.base.revision
            and r.action in ("create_security_key", "rotate_security_key", "delete_security_key")
        ]
        if changed:
            raise HistoryUnavailableError(
                f"the security keys of {', '.join(sorted(set(changed)))} changed between the "
                f"newest backup at or before r{past.revision} (r{past.base.revision}) and it; "
                "their keys then are in no backup. Restore without --include-keys, or restore "
                "that backup itself"
            )
        self._restore_keys_from(past.store)

    def _restore_keys_from(self, source: StateCore) -> None:
        live, old = self._store, source
        if not isinstance(live, SealedSecrets) or not isinstance(old, SealedSecrets):
            return
        wanted = {row.node_id: row for row in old.security_keys()}
        now = {row.node_id: row for row in live.security_keys()}
        fingerprint = self._secrets.key_fingerprint
        for node_id, row in now.items():
            if node_id not in wanted:
                live.delete_security_key(node_id, old_fingerprint=fingerprint(row))
        for node_id, row in wanted.items():
            current = now.get(node_id)
            if current is not None and current.sealed == row.sealed:
                continue
            live.put_security_key(
                node_id,
                row.sealed,
                row.key_version,
                fingerprint=fingerprint(row),
                old_fingerprint=None if current is None else fingerprint(current),
            )


class _Past:
    """A rebuilt state: the private store, the revision it shows, that row's chain value, the
    backup it started from (None: the empty state) and the trail rows behind it."""

    def __init__(
        self,
        store: StateCore,
        revision: int,
        chain: str | None,
        base: BackupInfo | None,
        rows: list[history.TrailRow],
    ) -> None:
        self.store, self.revision, self.chain, self.base, self.rows = (
            store,
            revision,
            chain,
            base,
            rows,
        )


def _bring_back(live: StateCore, past: StateCore) -> None:
    """Write into ``live`` each part of ``past`` that differs (in the caller's transaction)."""
    nodes = past.nodes()
    if [n.model_dump(mode="json") for n in nodes] != [
        n.model_dump(mode="json") for n in live.nodes()
    ] or [_token(n) for n in nodes] != [_token(n) for n in live.nodes()]:
        live.replace_nodes(nodes)
    for kind in KINDS:
        if kind.write is None or kind.name == "height":
            continue
        value = kind.read(past)
        if value != kind.read(live):
            kind.write(live, value)
    then, now = past.chain_state(), live.chain_state()
    for key in sorted(set(then) | set(now)):
        if then.get(key, "") != now.get(key, ""):
            live.set_chain_value(key, then.get(key, "0" if key == HEIGHT else ""))
    if past.node_versions() != live.node_versions():
        live.replace_node_versions(past.node_versions())


def _token(node: InferenceNodeConfig) -> str | None:
    token = node.auth_token
    return None if token is None else getattr(token, "sealed", token.get_secret_value())
