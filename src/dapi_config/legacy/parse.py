"""Reading the predecessor's single-file YAML: which keys are dynamic, and their values
parsed and checked into a :class:`LegacyState` (every era's shapes; odd ones warned about)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, SecretStr

from dapi_config import _progress as progress
from dapi_config.errors import ConfigError
from dapi_config.models import (
    LEGACY,
    LEGACY_NOTES,
    VALIDATION_ERRORS,
    BandwidthParamsCache,
    Hardware,
    InferenceNodeConfig,
    ModelConfig,
    ModelOverride,
    NodeVersion,
    PoCModelParams,
    PoCParamsCache,
    SeedInfo,
    UpgradePlan,
    ValidationParamsCache,
    describe,
    error_items,
)
from dapi_config.static import LEGACY_DYNAMIC_KEYS

if TYPE_CHECKING:
    pass

log = logging.getLogger("dapi_config.legacy")

#: ``legacy_imports.kind`` of a migrated single-file config.
LEGACY_KIND = "legacy_yaml"
#: ``legacy_imports.kind`` of a merged node file (``NODE_CONFIG_PATH``, ``nodes import``).
NODE_CONFIG_KIND = "node_config"
#: ``details.from`` of the node-file import recorded for the predecessor's ``merged_node_config``.
MERGED_FLAG_ORIGIN = "merged_node_config flag"
#: What states imported from a gonka.db before this release recorded as that origin.
MERGED_FLAG_ORIGINS = (MERGED_FLAG_ORIGIN, "gonka.db node_config_merged")
MIGRATION_ACTOR = "migration"
#: The seed keys of the later predecessor's ``kv_config`` (gonka.db).
SEED_KINDS_BY_KV: dict[str, Literal["current", "previous", "upcoming"]] = {
    "seed_current": "current",
    "seed_previous": "previous",
    "seed_upcoming": "upcoming",
}
SEED_KEYS: dict[str, Literal["current", "previous", "upcoming"]] = {
    "current_seed": "current",
    "previous_seed": "previous",
    "upcoming_seed": "upcoming",
}

ModelT = TypeVar("ModelT", bound=BaseModel)


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
    poc_params: PoCParamsCache | None = None
    #: The file listed a node's models as plain names (``[]string`` before 2025-03): its
    #: binary reads them only in that shape.
    models_as_names: bool = False
    #: Fields no model here knows, inside dynamic entries: dotted paths (stored as they are).
    kept: list[str] = field(default_factory=list)
    #: Values the strict rules for new input refuse, kept as the predecessor accepted them.
    flagged: list[str] = field(default_factory=list)
    #: Keys beside the schedule's list (``node_versions.<key>``): path -> value (not stored;
    #: they stay in the pre-migration backup).
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
        if self.poc_params is not None:
            out["poc_params"] = self.poc_params.model_dump(mode="json")
        if self.kept:
            out["kept_unknown_fields"] = list(self.kept)
        if self.flagged:
            out["kept_as_the_predecessor_accepted"] = list(self.flagged)
        if self.ignored:
            out["ignored_keys"] = sorted(self.ignored)
        return out


class LegacyParser:
    """Validates one legacy document; every error names the file, the key and the value."""

    def __init__(self, source: str, *, warn: bool = True) -> None:
        self.source = source
        self.ignored: dict[str, Any] = {}
        self.kept: list[str] = []
        #: Values the strict rules refuse that were kept as the predecessor accepted them.
        self.flagged: list[str] = []
        self.models_as_names = False
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

    def prepared(self, key: str, value: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
        """``value`` ready for ``model``: whole numbers given for string fields become strings
        (hand edits such as ``version: 2``); fields the model does not know are kept (and
        noted), so they are stored and written back as they were."""
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
                self.kept.append(path)
                self.logger.info(
                    "%s: %s is not a field dapi-config knows; kept as it is", self.source, path
                )
            known = model.model_fields.get(k)
            if (
                known is not None
                and known.annotation in (str, SecretStr | None)
                and isinstance(v, int)
                and not isinstance(v, bool)
            ):
                v = str(v)
            out[str(k)] = v
        return out

    def model(self, key: str, value: Any, model: type[ModelT]) -> ModelT:
        data = self.prepared(key, self.mapping(key, value), model)
        try:
            return model.model_validate(data)
        except VALIDATION_ERRORS as exc:
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

    def node(self, index: int, value: Any, *, table: str = "nodes") -> InferenceNodeConfig:
        key = f"{table}[{index}]"
        data = self.prepared(key, self.mapping(key, value), InferenceNodeConfig)
        models = data.get("models")
        if isinstance(models, list):
            merged: dict[str, Any] = {}
            for item in models:
                if isinstance(item, str):
                    # Most eras' configs list plain model names: ``- Qwen/Qwen2.5-7B-Instruct``.
                    self.models_as_names = True
                    item = {item: None}  # noqa: PLW2901 - one shape for both forms below
                if not isinstance(item, dict):
                    raise self.fail(
                        f"{key}.models", "expected model names or one-key maps in the list", item
                    )
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
                self.prepared(
                    f"{key}.hardware[{i}]", self.mapping(f"{key}.hardware[{i}]", h), Hardware
                )
                for i, h in enumerate(hardware)
            ]
        notes: list[str] = []
        try:
            node = InferenceNodeConfig.model_validate(
                data, context={LEGACY: True, LEGACY_NOTES: notes}
            )
        except VALIDATION_ERRORS as exc:
            raise ConfigError(f"{self.source}: {describe(error_items(exc, prefix=key))}") from None
        for note in notes:
            self.flagged.append(f"{key} ({node.id}): {note}")
            self.logger.warning(
                "%s: %s (%s): %s; kept as the predecessor accepted it (new input would be "
                "refused: fix it when convenient)",
                self.source,
                key,
                node.id,
                note,
            )
        return node

    def model_args(self, key: str, value: Any) -> dict[str, Any]:
        cfg = self.mapping(key, value)
        lower, upper = cfg.get("args"), cfg.get("Args")
        if lower is not None and upper is not None and lower != upper:
            raise self.fail(key, "both args and Args given with different values", cfg)
        args = lower if lower is not None else upper
        rest = self.prepared(
            key, {k: v for k, v in cfg.items() if k not in ("args", "Args")}, ModelConfig
        )
        override = rest.get("model_override")
        if override is not None:
            rest["model_override"] = self.prepared(
                f"{key}.model_override",
                self.mapping(f"{key}.model_override", override),
                ModelOverride,
            )
        if args is None:
            return {**rest, "args": []}
        if not isinstance(args, list):
            raise self.fail(f"{key}.args", "expected a list of strings", args)
        return {**rest, "args": [self.string(f"{key}.args", a) for a in args]}


def parse_legacy_state(
    document: Mapping[str, Any], source: str, *, warn: bool = True
) -> LegacyState:
    """Validate the dynamic keys of a legacy document (plain data); ``warn`` logs the
    unknown fields kept and the keys ignored.

    Raises :class:`ConfigError` naming ``source``, the key and the bad value.
    """
    p = LegacyParser(source, warn=warn)
    state = LegacyState()
    if "nodes" in document:
        raw = document["nodes"]
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise p.fail("nodes", "expected a list of nodes", raw)
        # The Go add handler appended a re-POSTed node without checking its id, so real files
        # hold an id twice; the Go loader accepted that and its broker kept the last entry.
        by_id: dict[str, InferenceNodeConfig] = {}
        twice: list[str] = []
        for i, item in enumerate(progress.counted("reading nodes", raw)):
            node = p.node(i, item)
            if node.id in by_id and node.id not in twice:
                twice.append(node.id)
            by_id[node.id] = node
        if twice:
            p.logger.warning(
                "%s: node id(s) %s listed more than once; the last entry of each is used, as "
                "the predecessor's broker did (the others stay in the pre-migration backup)",
                source,
                ", ".join(repr(t) for t in twice),
            )
        state.nodes = list(by_id.values())
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
    if "poc_params" in document:
        poc = p.mapping("poc_params", document["poc_params"])
        models = poc.get("models")
        if isinstance(models, list):
            poc = {
                **poc,
                "models": [
                    p.prepared(
                        f"poc_params.models[{i}]",
                        p.mapping(f"poc_params.models[{i}]", m),
                        PoCModelParams,
                    )
                    for i, m in enumerate(models)
                ],
            }
        state.poc_params = p.model("poc_params", poc, PoCParamsCache)
    state.ignored = p.ignored
    state.kept = p.kept
    state.flagged = p.flagged
    state.models_as_names = p.models_as_names
    return state


#: The comment ``API_STATE_MODE=yaml`` writes above the state it keeps in the config file: such
#: a file is this product's own live state, so switching back to the database imports it as
#: the newest state. The Go binary drops comments when it rewrites the file, so a file it
#: wrote has none (and is treated as any re-appearing legacy file).
YAML_MODE_MARKER = "# dapi-config API_STATE_MODE=yaml: the keys below are the live state"


def written_by_yaml_mode(raw: bytes) -> bool:
    """True when the file carries :data:`YAML_MODE_MARKER` on a line of its own."""
    return YAML_MODE_MARKER.encode("utf-8") in raw.splitlines()


def without_marker(text: str) -> str:
    """``text`` without :data:`YAML_MODE_MARKER` lines."""
    return "".join(
        line for line in text.splitlines(keepends=True) if line.rstrip("\r\n") != YAML_MODE_MARKER
    )


#: LegacyState attributes per top-level key of the legacy file.
_VALUE_KEYS = (
    "nodes",
    "current_height",
    "current_node_version",
    "last_processed_height",
    "last_used_version",
    "upgrade_plan",
    "node_versions",
    "validation_params",
    "bandwidth_params",
    "poc_params",
)


def state_values(state: LegacyState) -> dict[str, Any]:
    """The values ``state`` holds, as plain data per top-level legacy key (absent keys left
    out): what a comparison with another state, or an emptiness check, looks at."""
    out: dict[str, Any] = {}
    for key in _VALUE_KEYS:
        value = getattr(state, key)
        if value is None:
            continue
        if isinstance(value, list):
            out[key] = [item.model_dump(mode="json") for item in value]
        elif isinstance(value, BaseModel):
            out[key] = value.model_dump(mode="json")
        else:
            out[key] = value
    for kind, seed in state.seeds.items():
        out[f"{kind}_seed"] = seed.model_dump(mode="json")
    return out


def describe_state(state: LegacyState) -> str:
    """A short human summary of what a legacy file holds (for messages)."""
    parts = []
    if state.nodes is not None:
        parts.append(f"{len(state.nodes)} node(s)")
    if state.current_height is not None:
        parts.append(f"height {state.current_height}")
    if state.node_versions:
        parts.append(f"{len(state.node_versions)} scheduled version(s)")
    if any(seed != SeedInfo() for seed in state.seeds.values()):
        parts.append("seeds")
    return ", ".join(parts) or "dynamic keys with empty values"


def _is_empty(value: Any) -> bool:
    """Null, zero, empty text or collection, or a mapping of nothing but such values (the
    all-zero seed, the empty plan)."""
    if isinstance(value, dict):
        return all(_is_empty(v) for v in value.values())
    return value in (None, 0, "", False) or value == []


def differing_keys(file_state: LegacyState, current: LegacyState) -> list[str]:
    """The keys of the file whose value differs from the state's."""
    mine, theirs = state_values(file_state), state_values(current)
    return [key for key, value in mine.items() if theirs.get(key) != value]


def without_emptying(
    file_state: LegacyState, current: LegacyState
) -> tuple[LegacyState, list[str]]:
    """``file_state`` minus the keys whose value is empty or null where the state holds a
    non-empty one (a seed config copied over the live file must never empty the registry);
    returns the kept state and the keys left out."""
    mine, theirs = state_values(file_state), state_values(current)
    kept = dataclasses.replace(file_state, seeds=dict(file_state.seeds))
    skipped: list[str] = []
    for key, value in mine.items():
        if _is_empty(value) and not _is_empty(theirs.get(key)):
            skipped.append(key)
            if key.endswith("_seed"):
                del kept.seeds[key.removesuffix("_seed")]  # type: ignore[arg-type]
            else:
                setattr(kept, key, None)
    return kept, skipped


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
