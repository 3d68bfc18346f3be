"""The predecessor's single-file YAML: detect it, import it, write it back for a rollback.

Upgrade (on :meth:`ConfigManager.open` and by ``dapi-config migrate``), in three steps that can
each be interrupted:

1. copy the file byte for byte to ``<config>.pre-migration.<UTC timestamp>`` (0600);
2. import every dynamic value into the state file in ONE transaction that also records the
   source path and the file's SHA-256 in ``legacy_imports`` (actor ``migration``);
3. rewrite the config file to its static part only, atomically, keeping the file's comments,
   key order, unknown keys, formatting and mode.

Resuming after a crash: before step 2 the file still holds its dynamic keys and no import of its
checksum is recorded, so everything is redone (an existing backup with the same bytes is
reused). After step 2 the checksum is recorded, so the next run only rewrites. After step 3
the file has no dynamic keys and nothing happens (the file is not touched).

``NODE_CONFIG_PATH`` (a JSON list of nodes) is merged into the registry once, as the
predecessor did with its ``merged_node_config`` flag.

Rollback: :func:`rollback_document` + :func:`render_legacy_yaml` give the predecessor's exact
layout (static + dynamic), which the old binary loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel

from dapi_config import _failpoints
from dapi_config._files import atomic_write, file_lock, file_owner
from dapi_config._goyaml import render_go_yaml
from dapi_config._validation import describe, error_items
from dapi_config._yaml import dump_yaml, parse_yaml, to_plain
from dapi_config.errors import ConfigError, DuplicateNodeError, ValidationError
from dapi_config.models import (
    STATIC_SECTIONS,
    BandwidthParamsCache,
    Hardware,
    InferenceNodeConfig,
    NodeVersion,
    SeedInfo,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.static import LEGACY_DYNAMIC_KEYS, LEGACY_PASSWORD_KEY

if TYPE_CHECKING:
    from dapi_config.manager import ConfigManager
    from dapi_config.store.backend import StateBackend

log = logging.getLogger(__name__)

#: ``legacy_imports.kind`` of a migrated single-file config.
LEGACY_KIND = "legacy_yaml"
#: ``legacy_imports.kind`` of a merged node file (``NODE_CONFIG_PATH``, ``nodes import``).
NODE_CONFIG_KIND = "node_config"
MIGRATION_ACTOR = "migration"
BACKUP_INFIX = ".pre-migration."

StateMode = Literal["db", "dual", "yaml"]
STATE_MODES: tuple[StateMode, ...] = ("db", "dual", "yaml")
MIRROR_SUFFIX = ".legacy.yaml"

SEED_KEYS: dict[str, Literal["current", "previous", "upcoming"]] = {
    "current_seed": "current",
    "previous_seed": "previous",
    "upcoming_seed": "upcoming",
}
#: Fields the predecessor wrote in older versions that carry nothing today (logged at info).
_RETIRED_FIELDS = {"current_seed.height", "previous_seed.height", "upcoming_seed.height"}

ModelT = TypeVar("ModelT", bound=BaseModel)


def resolve_state_mode(env: Mapping[str, str]) -> StateMode:
    """``API_STATE_MODE``: ``db`` (default), ``dual`` or ``yaml``; else :class:`ConfigError`."""
    raw = env.get("API_STATE_MODE", "")
    value = raw.strip().lower() or "db"
    if value not in STATE_MODES:
        raise ConfigError(
            f"environment API_STATE_MODE: expected one of db, dual, yaml, got {raw!r}"
        )
    return value


def mirror_path_for(state_path: Path, env: Mapping[str, str]) -> Path:
    """The legacy-layout mirror of ``dual`` mode: ``API_STATE_MIRROR_PATH``, else
    ``<state file>.legacy.yaml`` beside the state file."""
    if env.get("API_STATE_MIRROR_PATH"):
        return Path(env["API_STATE_MIRROR_PATH"])
    return state_path.with_name(state_path.name + MIRROR_SUFFIX)


def checksum_of(raw: bytes) -> str:
    """The checksum recorded for an imported file."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def dynamic_keys_in(document: Mapping[str, Any]) -> list[str]:
    """The legacy dynamic top-level keys present in a config document, in file order."""
    return [k for k in document if k in LEGACY_DYNAMIC_KEYS]


# --- parsing legacy values -------------------------------------------------------------------


@dataclass
class LegacyState:
    """The dynamic values of a legacy file, validated. ``None`` = key absent (not imported)."""

    nodes: list[InferenceNodeConfig] | None = None
    merged_node_config: bool | None = None
    current_height: int | None = None
    current_node_version: str | None = None
    last_processed_height: int | None = None
    last_used_version: str | None = None
    seeds: dict[Literal["current", "previous", "upcoming"], SeedInfo] = field(default_factory=dict)
    upgrade_plan: UpgradePlan | None = None
    node_versions: list[NodeVersion] | None = None
    validation_params: ValidationParamsCache | None = None
    bandwidth_params: BandwidthParamsCache | None = None
    #: Unknown keys inside known sections: dotted path -> value (ignored, kept in the backup).
    ignored: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What would move into the state file, as plain data (for ``migrate --dry-run``)."""
        out: dict[str, Any] = {}
        if self.nodes is not None:
            out["nodes"] = [n.id for n in self.nodes]
        if self.merged_node_config is not None:
            out["merged_node_config"] = self.merged_node_config
        for name in (
            "current_height",
            "current_node_version",
            "last_processed_height",
            "last_used_version",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for kind, seed in self.seeds.items():
            out[f"{kind}_seed"] = seed.model_dump(mode="json")
        if self.upgrade_plan is not None:
            out["upgrade_plan"] = self.upgrade_plan.model_dump(mode="json")
        if self.node_versions is not None:
            out["node_versions"] = [v.model_dump(mode="json") for v in self.node_versions]
        if self.validation_params is not None:
            out["validation_params"] = self.validation_params.model_dump(mode="json")
        if self.bandwidth_params is not None:
            out["bandwidth_params"] = self.bandwidth_params.model_dump(mode="json")
        if self.ignored:
            out["ignored_keys"] = sorted(self.ignored)
        return out


class _Parser:
    """Validates one legacy document; every error names the file, the key and the value."""

    def __init__(self, source: str, *, warn: bool = True) -> None:
        self.source = source
        self.ignored: dict[str, Any] = {}
        self.logger = log if warn else logging.getLogger(f"{__name__}.quiet")
        if not warn:
            self.logger.disabled = True

    def fail(self, key: str, message: str, value: Any) -> ConfigError:
        shown = _short(value)
        return ConfigError(f"{self.source}: {key}: {message} (got {shown})")

    def mapping(self, key: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "expected a mapping", value)
        return value

    def known_only(self, key: str, value: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
        """Drop (and remember) keys the model doesn't know; turn whole numbers given for
        string fields into strings (hand edits such as ``version: 2``)."""
        names = set(model.model_fields)
        for finfo in model.model_fields.values():
            alias = finfo.validation_alias
            if alias is not None and hasattr(alias, "choices"):
                names.update(str(c) for c in alias.choices)
        out: dict[str, Any] = {}
        for k, item in value.items():
            v = item
            if k not in names:
                path = f"{key}.{k}"
                self.ignored[path] = v
                if _generic_path(path) in _RETIRED_FIELDS:
                    self.logger.info(
                        "%s: %s is an old field with no use today; ignored", self.source, path
                    )
                else:
                    self.logger.warning(
                        "%s: unknown key %s ignored (it stays in the pre-migration backup)",
                        self.source,
                        path,
                    )
                continue
            known = model.model_fields.get(k)
            if (
                known is not None
                and known.annotation is str
                and isinstance(v, int)
                and not isinstance(v, bool)
            ):
                v = str(v)
            out[k] = v
        return out

    def model(self, key: str, value: Any, model: type[ModelT]) -> ModelT:
        data = self.known_only(key, self.mapping(key, value), model)
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{self.source}: {describe(error_items(exc, prefix=key))}") from None

    def integer(self, key: str, value: Any) -> int:
        # The Go writer quoted numeric-looking strings, and hand edits quote numbers too.
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise self.fail(key, "expected a whole number from 0 to 2^63-1", value)
        return value

    def string(self, key: str, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise self.fail(key, "expected a string (put it in quotes)", value)
        return value

    def node(self, index: int, value: Any) -> InferenceNodeConfig:
        key = f"nodes[{index}]"
        data = self.known_only(key, self.mapping(key, value), InferenceNodeConfig)
        models = data.get("models")
        if isinstance(models, list):
            merged: dict[str, Any] = {}
            for item in models:
                if not isinstance(item, dict):
                    raise self.fail(f"{key}.models", "expected one-key maps in the list", item)
                for name, cfg in item.items():
                    if name in merged:
                        raise self.fail(f"{key}.models", "model listed twice", name)
                    merged[name] = cfg
            models = merged
        if isinstance(models, dict):
            data["models"] = {
                str(name): self.model_args(f"{key}.models.{name}", cfg)
                for name, cfg in models.items()
            }
        hardware = data.get("hardware")
        if isinstance(hardware, list):
            data["hardware"] = [
                self.known_only(
                    f"{key}.hardware[{i}]", self.mapping(f"{key}.hardware[{i}]", h), Hardware
                )
                for i, h in enumerate(hardware)
            ]
        try:
            return InferenceNodeConfig.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{self.source}: {describe(error_items(exc, prefix=key))}") from None

    def model_args(self, key: str, value: Any) -> dict[str, Any]:
        cfg = self.mapping(key, value)
        lower, upper = cfg.get("args"), cfg.get("Args")
        if lower is not None and upper is not None and lower != upper:
            raise self.fail(key, "both args and Args given with different values", cfg)
        args = lower if lower is not None else upper
        for k, v in cfg.items():
            if k not in ("args", "Args"):
                self.ignored[f"{key}.{k}"] = v
                self.logger.warning("%s: unknown key %s.%s ignored", self.source, key, k)
        if args is None:
            return {"args": []}
        if not isinstance(args, list):
            raise self.fail(f"{key}.args", "expected a list of strings", args)
        return {"args": [self.string(f"{key}.args", a) for a in args]}


def parse_legacy_state(
    document: Mapping[str, Any], source: str, *, warn: bool = True
) -> LegacyState:
    """Validate the dynamic keys of a legacy document (plain data); ``warn`` logs the
    ignored unknown keys.

    Raises :class:`ConfigError` naming ``source``, the key and the bad value.
    """
    p = _Parser(source, warn=warn)
    state = LegacyState()
    if "nodes" in document:
        raw = document["nodes"]
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise p.fail("nodes", "expected a list of nodes", raw)
        nodes = [p.node(i, item) for i, item in enumerate(raw)]
        seen: set[str] = set()
        for node in nodes:
            if node.id in seen:
                raise p.fail("nodes", "node id listed twice", node.id)
            seen.add(node.id)
        state.nodes = nodes
    if "merged_node_config" in document:
        flag = document["merged_node_config"]
        if flag is not None and not isinstance(flag, bool):
            raise p.fail("merged_node_config", "expected true or false", flag)
        state.merged_node_config = bool(flag)
    for key in ("current_height", "last_processed_height"):
        if document.get(key) is not None:
            setattr(state, key, p.integer(key, document[key]))
    for key in ("current_node_version", "last_used_version"):
        if document.get(key) is not None:
            setattr(state, key, p.string(key, document[key]))
    for key, kind in SEED_KEYS.items():
        if key in document:
            state.seeds[kind] = p.model(key, document[key], SeedInfo)
    if "upgrade_plan" in document:
        plan = p.mapping("upgrade_plan", document["upgrade_plan"])
        if plan.get("binaries") is None and "binaries" in plan:
            plan = {**plan, "binaries": {}}
        state.upgrade_plan = p.model("upgrade_plan", plan, UpgradePlan)
    if "node_versions" in document:
        raw = document["node_versions"]
        if isinstance(raw, dict):
            for k, v in raw.items():
                if k != "versions":
                    p.ignored[f"node_versions.{k}"] = v
                    p.logger.warning("%s: unknown key node_versions.%s ignored", source, k)
            raw = raw.get("versions")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise p.fail("node_versions.versions", "expected a list of {height, version}", raw)
        versions: list[NodeVersion] = []
        for i, item in enumerate(raw):
            version = p.model(f"node_versions.versions[{i}]", item, NodeVersion)
            if version not in versions:
                versions.append(version)
        state.node_versions = versions
    if "validation_params" in document:
        state.validation_params = p.model(
            "validation_params", document["validation_params"], ValidationParamsCache
        )
    if "bandwidth_params" in document:
        state.bandwidth_params = p.model(
            "bandwidth_params", document["bandwidth_params"], BandwidthParamsCache
        )
    state.ignored = p.ignored
    return state


def apply_legacy_state(store: StateBackend, state: LegacyState) -> None:
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
        store.replace_node_versions(state.node_versions)
    if state.validation_params is not None:
        store.set_params("validation", state.validation_params)
    if state.bandwidth_params is not None:
        store.set_params("bandwidth", state.bandwidth_params)


# --- rewriting the config file to its static part --------------------------------------------

_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


def strip_keys_text(text: str, doc: Any, remove: set[str]) -> str | None:
    """``text`` without the top-level entries ``remove``, every other byte kept.

    Works on lines: an entry runs from its key's line to its last content line; comment and
    blank lines after that (they usually introduce the next key) stay. The operator's comments
    inside a removed entry stay too, as comment lines at column 0 saying which key they were
    about (``# nodes.owner: the comment``). Returns None when the
    document is not a plain block mapping at column 0 (then the caller falls back to a ruamel
    dump).
    """
    lines = _LINE.findall(text)
    try:
        positions = sorted((doc.lc.key(k)[0], doc.lc.key(k)[1], k) for k in doc)
    except (AttributeError, KeyError, TypeError):
        return None
    if any(col != 0 for _, col, _ in positions) or len({ln for ln, _, _ in positions}) != len(
        positions
    ):
        return None
    replace: dict[int, str] = {}
    for i, (line, _col, key) in enumerate(positions):
        if key not in remove:
            continue
        end = positions[i + 1][0] if i + 1 < len(positions) else len(lines)
        last = line
        for j in range(line, end):
            stripped = lines[j].strip()
            if stripped and not stripped.startswith("#") and stripped not in ("...", "---"):
                last = j
        for j in range(line, last + 1):
            replace[j] = _comment_only(lines[j], str(key))
    return "".join(replace.get(i, line) for i, line in enumerate(lines))


def _comment_only(line: str, entry: str) -> str:
    """What stays of a line of the removed entry ``entry``: its comment, if any, as a comment
    line naming the key it was about; else nothing."""
    stripped = line.strip()
    if stripped.startswith("#"):
        comment: str | None = stripped
        key = ""
    else:
        comment = _trailing_comment(line)
        key = stripped.lstrip("- ").split(":", 1)[0].strip() if ":" in stripped else ""
    if comment is None:
        return ""
    where = entry if key in ("", entry) else f"{entry}.{key}"
    ending = "\r\n" if line.endswith("\r\n") else "\n"
    return f"# {where}: {comment.lstrip('#').strip()}{ending}"


def _trailing_comment(line: str) -> str | None:
    """The ``# ...`` at the end of a YAML line, outside quotes (None when there is none)."""
    quote: str | None = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote == "'":
            if ch == "'" and line[i + 1 : i + 2] == "'":
                i += 1
            elif ch == "'":
                quote = None
        elif quote == '"':
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = None
        elif ch in "'\"" and (i == 0 or line[i - 1] in " \t[{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[i:].rstrip("\r\n")
        i += 1
    return None


def static_text(text: str, doc: Any, source: str, remove: set[str] | None = None) -> str:
    """The config text without its dynamic keys, verified to parse to exactly the rest."""
    remove = set(dynamic_keys_in(doc)) if remove is None else remove
    expected = {k: v for k, v in to_plain(doc).items() if k not in remove}
    spliced = strip_keys_text(text, doc, remove)
    if spliced is not None:
        again = parse_yaml(spliced, source)
        if (to_plain(again) if again is not None else {}) == expected:
            return spliced
    log.warning(
        "%s: the file's layout could not be kept line for line; writing it re-formatted "
        "(comments attached to the moved keys may be lost; the backup has them)",
        source,
    )
    for key in remove:
        del doc[key]
    return dump_yaml(doc) if len(doc) else ""


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
    dry_run: bool = False,
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
    if dry_run:
        return MigrationReport(source, "dry_run", keys, None, checksum, moved)
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


# --- NODE_CONFIG_PATH and ``nodes import`` ---------------------------------------------------


def read_node_file(path: Path) -> list[InferenceNodeConfig]:
    """Parse and validate a JSON list of nodes (the predecessor's node-config file).

    Unknown keys in a node are ignored with a warning. Raises :class:`ConfigError` for an
    unreadable or malformed file, :class:`DuplicateNodeError` for an id listed twice.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: node file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the node file: {exc}") from None

    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ConfigError(f"{source}: duplicate key {k!r} in a JSON object")
            out[k] = v
        return out

    try:
        data = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, list):
        raise ConfigError(f"{source}: expected a JSON list of nodes, got {type(data).__name__}")
    p = _Parser(source)
    nodes = [p.node(i, item) for i, item in enumerate(data)]
    seen: set[str] = set()
    for node in nodes:
        if node.id in seen:
            raise DuplicateNodeError(
                node.id, f"{source}: node id {node.id!r} is listed twice; nothing was imported"
            )
        seen.add(node.id)
    return nodes


def import_node_file(
    store: StateBackend,
    path: Path,
    *,
    replace: bool = False,
    before_risky_operation: Callable[[str], None] | None = None,
) -> list[InferenceNodeConfig]:
    """Merge (or with ``replace``, substitute) the nodes of a JSON node file, all or nothing,
    and record the import. Raises :class:`ConfigError`, :class:`DuplicateNodeError`."""
    nodes = read_node_file(path)
    raw = path.read_bytes()
    if replace and before_risky_operation is not None:
        before_risky_operation("node-file-replace")
    with store.transaction():
        if replace:
            store.replace_nodes(nodes)
        else:
            existing = {n.id for n in store.nodes()}
            for node in nodes:
                if node.id in existing:
                    raise DuplicateNodeError(
                        node.id,
                        f"{path}: node id {node.id!r} is already registered; nothing was "
                        "imported (use --replace to replace the whole registry)",
                    )
            store.add_nodes(nodes)
        store.record_import(
            NODE_CONFIG_KIND,
            str(path.resolve()),
            checksum_of(raw),
            {"nodes": [n.id for n in nodes], "replace": replace},
        )
    return nodes


def import_node_config_env(
    store: StateBackend, env: Mapping[str, str]
) -> list[InferenceNodeConfig] | None:
    """``NODE_CONFIG_PATH``: merge its nodes once; later starts skip it with a log line.

    Returns the imported nodes, or None when there was nothing to do. Raises
    :class:`ConfigError` (a duplicate id included: nothing is imported then).
    """
    raw_path = env.get("NODE_CONFIG_PATH", "").strip()
    if not raw_path:
        return None
    path = Path(raw_path)
    done = store.find_import(NODE_CONFIG_KIND)
    if done is not None:
        log.info(
            "NODE_CONFIG_PATH=%s skipped: a node file was already merged (%s, from %s); "
            "use `dapi-config nodes import FILE --replace` to apply it again",
            path,
            done.get("imported_at", "earlier"),
            done.get("source_path"),
        )
        return None
    try:
        with store.acting_as(MIGRATION_ACTOR):
            nodes = import_node_file(store, path)
    except DuplicateNodeError as exc:
        raise ConfigError(f"environment NODE_CONFIG_PATH: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"environment NODE_CONFIG_PATH: {path}: {exc}") from None
    log.warning("NODE_CONFIG_PATH=%s: %d node(s) merged into the registry", path, len(nodes))
    return nodes


# --- rollback and the legacy layout ----------------------------------------------------------


def render_legacy_yaml(data: Mapping[str, Any]) -> str:
    """The predecessor's single-file layout (sorted keys, 4-space indent, quoted numeric
    strings) of ``data`` (plain data, e.g. :meth:`ConfigManager.export_full_config`)."""
    return render_go_yaml(data)


def rollback_document(cm: ConfigManager) -> dict[str, Any]:
    """Static + dynamic configuration for the old binary: every secret it needs included
    (the worker key; ``chain_node.KeyringPassword`` only when the config file itself holds
    it), the keyring password from the environment never."""
    # The old binary knows no per-node security keys: keep them out of this plaintext file.
    data = cm.export_full_config(include_secrets=True, include_security_keys=False)
    document = cm.loaded_document
    chain = document.get("chain_node")
    if isinstance(chain, dict) and chain.get(LEGACY_PASSWORD_KEY) is not None:
        data.setdefault("chain_node", {})[LEGACY_PASSWORD_KEY] = str(chain[LEGACY_PASSWORD_KEY])
    return data


def write_rollback(cm: ConfigManager, out: Path) -> Path:
    """Write the rollback file atomically (0600: it holds the worker key). Raises
    :class:`ConfigError` when it cannot be written."""
    data = rollback_document(cm)
    text = render_legacy_yaml(data)
    # The old binary must read back exactly what the state holds: check before writing.
    if to_plain(parse_yaml(text, str(out))) != json.loads(json.dumps(data)):
        raise ConfigError(f"{out}: internal error: the rollback file would not read back")
    try:
        atomic_write(out, text, mode=0o600)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the rollback file: {exc.strerror or exc}") from None
    return out


class _Mirror:
    """``dual`` mode: the legacy-layout file rewritten after every committed change."""

    def __init__(self, cm: ConfigManager, path: Path) -> None:
        self.cm = cm
        self.path = path
        self.lock = path.with_name(f".{path.name}.lock")

    def write(self) -> None:
        # Rendering happens under the lock, after our commit: whichever process writes last
        # has read a state that includes every commit made before it, so the file never
        # goes back to an older state.
        with file_lock(self.lock):
            atomic_write(self.path, render_legacy_yaml(rollback_document(self.cm)), mode=0o600)


def attach_mirror(cm: ConfigManager, path: Path) -> None:
    """Start ``dual`` mode: write the mirror now and after every commit of ``cm``'s store.

    Raises :class:`ConfigError` when the mirror cannot be written at open.
    """
    mirror = _Mirror(cm, path)
    try:
        mirror.write()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write the API_STATE_MODE=dual mirror: {exc.strerror or exc}"
        ) from None
    cm.store.db.commit_hooks.append(mirror.write)
    log.info("API_STATE_MODE=dual: legacy-layout mirror kept at %s", path)


def static_sections_present(document: Mapping[str, Any]) -> list[str]:
    """The static sections a document holds (for messages)."""
    return [k for k in STATIC_SECTIONS if k in document]


def _generic_path(path: str) -> str:
    return re.sub(r"\[\d+\]", "", path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
