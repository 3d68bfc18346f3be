"""The upgrade itself, in three steps that can each be interrupted (see
:mod:`dapi_config.legacy`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dapi_config import _failpoints
from dapi_config._files import atomic_write, file_owner
from dapi_config._yaml import parse_yaml, to_plain
from dapi_config.errors import ConfigError

if TYPE_CHECKING:
    from dapi_config.store.backend import StateBackend


from dapi_config.legacy.parse import (
    LEGACY_KIND,
    MIGRATION_ACTOR,
    NODE_CONFIG_KIND,
    LegacyState,
    _jsonable,
    apply_legacy_state,
    checksum_of,
    dynamic_keys_in,
    parse_legacy_state,
)
from dapi_config.legacy.text import static_text

log = logging.getLogger("dapi_config.legacy")

BACKUP_INFIX = ".pre-migration."

# --- the migration ---------------------------------------------------------------------------


@dataclass
class MigrationReport:
    """What a legacy migration did (or, for a dry run, would do)."""

    config_path: str
    action: Literal["none", "migrated", "resumed", "dry_run"]
    keys: list[str] = field(default_factory=list)
    backup_path: str | None = None
    checksum: str | None = None
    moved: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config_path": self.config_path,
            "action": self.action,
            "keys": self.keys,
            "backup_path": self.backup_path,
            "checksum": self.checksum,
            "moved": self.moved,
        }


def backup_name(config: Path, now: datetime | None = None) -> Path:
    """``<config>.pre-migration.<UTC timestamp>``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return config.with_name(f"{config.name}{BACKUP_INFIX}{stamp}")


def write_backup(config: Path, raw: bytes) -> Path:
    """Step 1: a byte-identical 0600 copy of the legacy file (an existing identical copy from
    an interrupted run is reused). Raises :class:`ConfigError` when it cannot be written."""
    for existing in sorted(config.parent.glob(f"{config.name}{BACKUP_INFIX}*")):
        with contextlib.suppress(OSError):
            if existing.is_file() and existing.read_bytes() == raw:
                log.info("%s: reusing the pre-migration backup %s", config, existing)
                return existing
    target = backup_name(config)
    n = 1
    while target.exists():
        target = backup_name(config).with_name(f"{backup_name(config).name}.{n}")
        n += 1
    try:
        atomic_write(target, raw, mode=0o600)
    except OSError as exc:
        raise ConfigError(
            f"{config}: cannot write the pre-migration backup {target}: "
            f"{exc.strerror or exc}; nothing was changed"
        ) from None
    log.warning("%s: legacy single-file config found; backup written to %s", config, target)
    return target


def import_state(
    store: StateBackend,
    state: LegacyState,
    *,
    source: str,
    checksum: str,
    backup: Path | None,
    keys: list[str],
) -> bool:
    """Step 2: import ``state`` and record the import, in one transaction.

    Returns False (and changes nothing) when an import of this checksum is already recorded,
    which also makes two processes migrating at once safe: the transaction takes the write
    lock before checking.
    """
    # durable: the next step strips the dynamic keys from the config file; under
    # durability="normal" an unsynced import could vanish with a power cut after that rewrite.
    with store.transaction(durable=True), store.acting_as(MIGRATION_ACTOR):
        if _already_imported(store, checksum):
            return False
        apply_legacy_state(store, state)
        if state.merged_node_config and store.find_import(NODE_CONFIG_KIND) is None:
            # The predecessor already merged its NODE_CONFIG_PATH file: never merge it again.
            store.record_import(
                NODE_CONFIG_KIND, source, checksum, {"from": "merged_node_config flag"}
            )
        store.record_import(
            LEGACY_KIND,
            source,
            checksum,
            {
                "backup": None if backup is None else str(backup),
                "keys": keys,
                "ignored": {k: _jsonable(v) for k, v in state.ignored.items()},
            },
        )
    return True


def _already_imported(store: StateBackend, checksum: str) -> bool:
    found = store.find_import(LEGACY_KIND)
    return found is not None and found["checksum"] == checksum


def rewrite_static(config: Path, raw: bytes, new_text: str) -> bool:
    """Step 3: replace the legacy file by its static part, atomically, keeping its owner; the
    mode becomes 0600 (SPEC §11), or stays stricter when it already was.

    Does nothing (returns False) when the file no longer holds ``raw`` (another process
    finished first, or the operator edited it meanwhile).
    """
    try:
        if config.read_bytes() != raw:
            return False
        st = config.stat()
    except FileNotFoundError:
        return False
    atomic_write(config, new_text, mode=st.st_mode & 0o600, owner=file_owner(st))
    log.warning("%s: dynamic keys moved to the state file; the file now holds static keys", config)
    return True


def migrate_legacy_file(
    store: StateBackend,
    config: Path,
    *,
    before_risky_operation: Callable[[str], None] | None = None,
    parsed: tuple[bytes, Any] | None = None,
) -> MigrationReport:
    """Run (or resume) the legacy migration of ``config`` into ``store``.

    ``parsed`` = (bytes, round-trip tree) of the file as already read: reused when the file
    still holds those bytes (a large legacy file takes seconds to parse). A file without
    dynamic keys is left untouched (not even opened for writing). Raises
    :class:`ConfigError` for malformed legacy values (before anything is written).
    """
    source = str(config)
    try:
        raw = config.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{config}: cannot read the config file: {exc.strerror}") from None
    if parsed is not None and parsed[0] == raw and parsed[1] is not None:
        doc = parsed[1]
    else:
        doc = parse_yaml(raw, source)
    if not isinstance(doc, dict):
        return MigrationReport(source, "none")
    keys = dynamic_keys_in(doc)
    if not keys:
        return MigrationReport(source, "none")
    plain = to_plain(doc)
    state = parse_legacy_state(plain, source)
    checksum = checksum_of(raw)
    new_text = static_text(raw.decode("utf-8"), doc, source, set(keys))
    moved = state.summary()
    source_path = str(config.resolve())
    resumed = _already_imported(store, checksum)
    backup: Path | None = None
    if not resumed:
        backup = write_backup(config, raw)
        if before_risky_operation is not None:
            before_risky_operation("legacy-migration")
        imported = import_state(
            store, state, source=source_path, checksum=checksum, backup=backup, keys=keys
        )
        # Test-only crash point: imported, config file not yet rewritten (see _failpoints).
        _failpoints.hit("legacy.mid_migration")
        resumed = not imported
    else:
        found = store.find_import(LEGACY_KIND) or {}
        backup_raw = (found.get("details") or {}).get("backup")
        backup = Path(backup_raw) if backup_raw else None
        log.warning(
            "%s: its dynamic keys were imported before (checksum %s); finishing the rewrite",
            config,
            checksum,
        )
    try:
        rewrite_static(config, raw, new_text)
    except OSError as exc:
        raise ConfigError(
            f"{config}: dynamic keys were imported into the state file but the config file "
            f"could not be rewritten ({exc.strerror or exc}); the next start finishes the job"
        ) from None
    return MigrationReport(
        source,
        "resumed" if resumed else "migrated",
        keys,
        None if backup is None else str(backup),
        checksum,
        moved,
    )


def plan_migration(config: Path) -> MigrationReport:
    """What :func:`migrate_legacy_file` would do, changing nothing (``migrate --dry-run``)."""
    source = str(config)
    try:
        raw = config.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{config}: cannot read the config file: {exc.strerror}") from None
    doc = parse_yaml(raw, source)
    keys = dynamic_keys_in(doc) if isinstance(doc, dict) else []
    if not keys:
        return MigrationReport(source, "none")
    state = parse_legacy_state(to_plain(doc), source)
    static_text(raw.decode("utf-8"), doc, source, set(keys))
    return MigrationReport(source, "dry_run", keys, None, checksum_of(raw), state.summary())
