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
from dapi_config import _progress as progress
from dapi_config._files import atomic_write, file_owner
from dapi_config._logging import RESULT
from dapi_config._yaml import YamlFile, load_document, parse_yaml, to_plain
from dapi_config.errors import ConfigError
from dapi_config.models import BandwidthParamsCache, PoCParamsCache, ValidationParamsCache
from dapi_config.schedule import from_go_stack
from dapi_config.static import LEGACY_PASSWORD_KEY

if TYPE_CHECKING:
    from dapi_config.store.backend import StateCore


from dapi_config.legacy.parse import (
    LEGACY_KIND,
    MERGED_FLAG_ORIGIN,
    MIGRATION_ACTOR,
    NODE_CONFIG_KIND,
    LegacyState,
    _jsonable,
    checksum_of,
    differing_keys,
    dynamic_keys_in,
    parse_legacy_state,
    without_emptying,
    without_marker,
    written_by_yaml_mode,
)
from dapi_config.legacy.text import edit_nested_scalars, static_text

log = logging.getLogger("dapi_config.legacy")

BACKUP_INFIX = ".pre-migration."

# --- the migration ---------------------------------------------------------------------------


@dataclass
class MigrationReport:
    """What a legacy migration did (or, for a dry run, would do)."""

    config_path: str
    #: ``ignored``: the state had already taken a legacy import, so this file's dynamic keys
    #: were not imported (only stripped from the file); ``migrate --force`` imports them.
    action: Literal["none", "migrated", "resumed", "ignored", "dry_run"]
    keys: list[str] = field(default_factory=list)
    backup_path: str | None = None
    checksum: str | None = None
    moved: dict[str, Any] = field(default_factory=dict)
    #: Keys whose value in the file differed from the state's (``ignored``), or empty values
    #: that were not allowed to replace non-empty ones.
    not_imported: list[str] = field(default_factory=list)
    #: The verified backup of the state taken once the migration committed (None: none).
    state_backup: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state_backup": self.state_backup,
            "config_path": self.config_path,
            "action": self.action,
            "keys": self.keys,
            "backup_path": self.backup_path,
            "checksum": self.checksum,
            "moved": self.moved,
            "not_imported": self.not_imported,
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
    log.warning(
        "%s: legacy single-file config found; backup written to %s", config, target, extra=RESULT
    )
    return target


ImportOutcome = Literal["imported", "already", "ignored"]


def import_state(
    store: StateCore,
    state: LegacyState,
    *,
    source: str,
    checksum: str,
    backup: Path | None,
    keys: list[str],
    force: bool = False,
    skipped: list[str] | None = None,
) -> ImportOutcome:
    """Step 2: import ``state`` and record the import, in one transaction.

    ``already`` (nothing changed) when an import of this checksum is recorded, which also makes
    two processes migrating at once safe: the transaction takes the write lock before checking.
    ``ignored`` (nothing changed) when the state took another legacy import before and not
    ``force``: dynamic keys that reappear in the YAML (an image that copies its seed config
    over the live one at each start) are never imported again by accident. Unless ``force``,
    an empty or null value never replaces a non-empty one; such keys are appended to
    ``skipped`` (and ``ignored`` appends every key whose value differs from the state).
    """
    # durable: the next step strips the dynamic keys from the config file; under
    # durability="normal" an unsynced import could vanish with a power cut after that rewrite.
    with store.transaction(durable=True), store.acting_as(MIGRATION_ACTOR):
        previous = store.find_import(LEGACY_KIND)
        if previous is not None and previous["checksum"] == checksum:
            return "already"
        current = current_state(store)
        if previous is not None and not force:
            if skipped is not None:
                skipped.extend(sorted(differing_keys(state, current)))
            return "ignored"
        if not force:
            state, left_out = without_emptying(state, current)
            if skipped is not None:
                skipped.extend(sorted(left_out))
        apply_legacy_state(store, state)
        if state.merged_node_config and store.find_import(NODE_CONFIG_KIND) is None:
            # The predecessor already merged its NODE_CONFIG_PATH file: never merge it again.
            store.record_import(NODE_CONFIG_KIND, source, checksum, {"from": MERGED_FLAG_ORIGIN})
        store.record_import(
            LEGACY_KIND,
            source,
            checksum,
            {
                "backup": None if backup is None else str(backup),
                "keys": keys,
                "ignored": {k: _jsonable(v) for k, v in state.ignored.items()},
                "kept_unknown_fields": list(state.kept),
                "kept_as_the_predecessor_accepted": list(state.flagged),
                "models_as_names": state.models_as_names,
            },
        )
    return "imported"


# --- the state's side: what it holds, and the legacy values written into it -------------


def current_state(store: StateCore) -> LegacyState:
    """What ``store`` holds now, as the legacy keys would carry it (one consistent read)."""
    with store.snapshot():
        chain = store.chain_state()
        return LegacyState(
            nodes=store.nodes(),
            current_height=int(chain.get("current_height", 0)),
            current_node_version=chain.get("current_node_version", ""),
            last_processed_height=int(chain.get("last_processed_height", 0)),
            last_used_version=chain.get("last_used_version", ""),
            seeds={kind: store.seed(kind) for kind in ("current", "previous", "upcoming")},
            upgrade_plan=store.upgrade_plan(),
            node_versions=store.node_versions(),
            validation_params=store.params("validation", ValidationParamsCache),
            bandwidth_params=store.params("bandwidth", BandwidthParamsCache),
            poc_params=store.params("poc", PoCParamsCache),
        )


def apply_legacy_state(store: StateCore, state: LegacyState) -> None:
    """Write ``state`` into ``store`` inside the caller's transaction (keys absent from the
    file are left alone). The schedule is stored as is: the next ``set_height`` applies it."""
    if state.nodes is not None:
        store.replace_nodes(state.nodes)
    for key in ("current_height", "last_processed_height"):
        value = getattr(state, key)
        if value is not None:
            store.set_chain_value(key, str(value))
    for key in ("current_node_version", "last_used_version"):
        value = getattr(state, key)
        if value is not None:
            store.set_chain_value(key, value)
    for kind, seed in state.seeds.items():
        store.set_seed(kind, seed)
    if state.upgrade_plan is not None:
        store.set_upgrade_plan(state.upgrade_plan)
    if state.node_versions is not None:
        store.replace_node_versions(from_go_stack(state.node_versions))
    if state.validation_params is not None:
        store.set_params("validation", state.validation_params)
    if state.bandwidth_params is not None:
        store.set_params("bandwidth", state.bandwidth_params)
    if state.poc_params is not None:
        store.set_params("poc", state.poc_params)


def _already_imported(store: StateCore, checksum: str) -> bool:
    found = store.find_import(LEGACY_KIND)
    return found is not None and found["checksum"] == checksum


def rewrite_static(config: Path, raw: bytes, new_text: str, *, imported: bool = True) -> bool:
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
    if imported:
        log.warning(
            "%s: dynamic keys moved to the state file; the file now holds static keys",
            config,
            extra=RESULT,
        )
    return True


@dataclass(frozen=True)
class LegacyFile:
    """A config file that still holds the predecessor's dynamic keys, as read once when the
    state was opened: the file (bytes and document), its dynamic keys, and their values as
    checked (None: not checked yet; the migration checks them)."""

    file: YamlFile
    keys: tuple[str, ...]
    state: LegacyState | None = None

    @property
    def path(self) -> Path:
        return self.file.path


def legacy_file(file: YamlFile, *, check: bool) -> LegacyFile | None:
    """``file`` as a :class:`LegacyFile` when it holds dynamic keys (else None); ``check``:
    validate their values now (raises :class:`ConfigError`, before anything is written)."""
    plain = file.document.data
    keys = dynamic_keys_in(plain) if isinstance(plain, dict) else []
    if not keys:
        return None
    state = parse_legacy_state(plain, str(file.path)) if check else None
    return LegacyFile(file, tuple(keys), state)


def migrate_legacy_file(
    store: StateCore,
    source: LegacyFile | Path,
    *,
    before_risky_operation: Callable[[str], None] | None = None,
    force: bool = False,
) -> MigrationReport:
    """Run (or resume) the legacy migration of ``source`` into ``store``: the file as read
    at open (its bytes and document are not read or parsed again), or a path to read now.

    Once the state has taken a legacy import, a file with other dynamic values is backed up
    and stripped to its static part without importing them (one WARNING names the keys whose
    value differs from the state); ``force`` imports them, empty values included, after the
    ``before_risky_operation("legacy-reimport")`` backup of the state. A file without
    dynamic keys is left untouched (not even opened for writing). The rewrite replaces the
    file only if it still holds the bytes imported. Raises :class:`ConfigError` for
    malformed legacy values (before anything is written).
    """
    if isinstance(source, Path):
        raw = _read_config(source)
        found = legacy_file(YamlFile(source, raw, load_document(raw, str(source))), check=False)
        if found is None:
            return MigrationReport(str(source), "none")
        source = found
    config, raw, document = source.path, source.file.raw, source.file.document
    keys = list(source.keys)
    state = source.state
    if state is None:
        state = parse_legacy_state(document.data, str(config))  # a LegacyFile holds a mapping
    source_text = str(config)
    checksum = checksum_of(raw)
    new_text = without_marker(static_text(document, set(keys)))
    # API_STATE_MODE=yaml's own file holds the newest state: switching back imports it.
    force = force or written_by_yaml_mode(raw)
    moved = state.summary()
    source_path = str(config.resolve())
    resumed = _already_imported(store, checksum)
    backup: Path | None = None
    skipped: list[str] = []
    outcome: ImportOutcome = "already"
    if not resumed:
        progress.report("backing up the config file")
        backup = write_backup(config, raw)
        earlier = store.find_import(LEGACY_KIND) is not None
        if before_risky_operation is not None and (force or not earlier):
            # Only when this import will write (a re-appearing file is not imported).
            progress.report("backing up the state")
            before_risky_operation("legacy-reimport" if earlier else "legacy-migration")
        progress.report(f"importing {len(state.nodes or []):,} node(s) and {len(keys)} key(s)")
        outcome = import_state(
            store,
            state,
            source=source_path,
            checksum=checksum,
            backup=backup,
            keys=keys,
            force=force,
            skipped=skipped,
        )
        # Test-only crash point: imported, config file not yet rewritten (see _failpoints).
        _failpoints.hit("legacy.mid_migration")
        resumed = outcome == "already"
        _warn_not_imported(config, outcome, skipped, backup)
    else:
        record = store.find_import(LEGACY_KIND) or {}
        backup_raw = (record.get("details") or {}).get("backup")
        backup = Path(backup_raw) if backup_raw else None
        log.warning(
            "%s: its dynamic keys were imported before (checksum %s); finishing the rewrite",
            config,
            checksum,
        )
    progress.report("rewriting the config file to its static part")
    try:
        rewrite_static(config, raw, new_text, imported=outcome != "ignored")
    except OSError as exc:
        raise ConfigError(
            f"{config}: dynamic keys were imported into the state file but the config file "
            f"could not be rewritten ({exc.strerror or exc}); the next start finishes the job"
        ) from None
    action: Literal["resumed", "ignored", "migrated"] = (
        "resumed" if resumed else "ignored" if outcome == "ignored" else "migrated"
    )
    return MigrationReport(
        source_text,
        action,
        keys,
        None if backup is None else str(backup),
        checksum,
        moved,
        skipped,
    )


def _warn_not_imported(
    config: Path, outcome: ImportOutcome, skipped: list[str], backup: Path
) -> None:
    if outcome == "ignored":
        differing = ", ".join(skipped) if skipped else "none"
        log.warning(
            "%s: dynamic keys found again, but the state already took a legacy import, so "
            "they were NOT imported (values that differ from the state: %s); the file is "
            "backed up to %s and now holds its static keys. To import them on purpose (e.g. "
            "after running the old binary): cp %s %s && dapi-config migrate --force",
            config,
            differing,
            backup,
            backup,
            config,
        )
    elif skipped:
        log.warning(
            "%s: empty values of %s were not imported over the state's non-empty ones "
            "(dapi-config migrate --force imports them)",
            config,
            ", ".join(skipped),
        )


def _read_config(config: Path) -> bytes:
    try:
        return config.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{config}: cannot read the config file: {exc.strerror}") from None


def plan_migration(config: Path) -> MigrationReport:
    """What :func:`migrate_legacy_file` would do, changing nothing (``migrate --dry-run``)."""
    source = str(config)
    raw = _read_config(config)
    document = load_document(raw, source)
    plain = document.data
    keys = dynamic_keys_in(plain) if isinstance(plain, dict) else []
    if not keys:
        return MigrationReport(source, "none")
    state = parse_legacy_state(plain, source)
    static_text(document, set(keys))
    return MigrationReport(source, "dry_run", keys, None, checksum_of(raw), state.summary())


@dataclass
class SealReport:
    """What ``secrets seal`` moved out of the config file."""

    config_path: str
    sealed: list[str] = field(default_factory=list)
    backup_path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "config_path": self.config_path,
            "sealed": self.sealed,
            "backup_path": self.backup_path,
        }


def seal_file_secrets(
    config: Path,
    store_sealed: Callable[[tuple[str, str] | None, str | None], None],
) -> SealReport:
    """Move ``ml_node_key_config.worker_private`` (with its public key) and
    ``chain_node.KeyringPassword`` out of the config file into sealed state.

    The file protocol of a migration: a byte copy of the file first
    (``<config>.pre-seal.<UTC time>``), then ``store_sealed(worker, password)`` (one durable
    transaction), then the file rewritten atomically without them (``worker_private: ""``; the
    ``KeyringPassword`` line removed), every other byte kept. A crash in between leaves the
    secrets in the file and maybe also in the state: running it again finishes the job.
    Raises :class:`ConfigError` (nothing changed) when the file cannot be edited in place.
    """
    source = str(config)
    raw = _read_config(config)
    doc = parse_yaml(raw, source)
    plain = to_plain(doc) if isinstance(doc, dict) else {}
    keys = plain.get("ml_node_key_config") or {}
    chain = plain.get("chain_node") or {}
    worker = None
    edits: dict[tuple[str, str], str | None] = {}
    if isinstance(keys, dict) and keys.get("worker_private"):
        worker = (str(keys.get("worker_public") or ""), str(keys["worker_private"]))
        edits[("ml_node_key_config", "worker_private")] = '""'
    password = None
    if isinstance(chain, dict) and chain.get(LEGACY_PASSWORD_KEY):
        password = str(chain[LEGACY_PASSWORD_KEY])
        edits[("chain_node", LEGACY_PASSWORD_KEY)] = None
    report = SealReport(source, [f"{s}.{k}" for s, k in edits])
    if not edits:
        return report
    try:
        new_text = edit_nested_scalars(raw.decode("utf-8"), doc, edits)
    except ValueError as exc:
        raise ConfigError(
            f"{config}: cannot take the secrets out of the file in place ({exc}); nothing "
            "was changed. Move them by hand: delete the values from the file after "
            "`dapi-config secrets seal` has stored them"
        ) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = config.with_name(f"{config.name}.pre-seal.{stamp}")
    try:
        atomic_write(backup, raw, mode=0o600)
    except OSError as exc:
        raise ConfigError(
            f"{config}: cannot write the backup {backup}: {exc.strerror or exc}; nothing was "
            "changed"
        ) from None
    report.backup_path = str(backup)
    store_sealed(worker, password)
    _failpoints.hit("seal.before_rewrite")
    try:
        st = config.stat()
        atomic_write(config, new_text, mode=st.st_mode & 0o600, owner=file_owner(st))
    except OSError as exc:
        raise ConfigError(
            f"{config}: the secrets are sealed in the state but the file could not be "
            f"rewritten ({exc.strerror or exc}); run `dapi-config secrets seal` again"
        ) from None
    log.warning(
        "%s: %s moved into sealed state (backup %s)", config, ", ".join(report.sealed), backup
    )
    return report
