"""Writing the predecessor's layout back: the rollback file and the ``dual``-mode mirror."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dapi_config._files import atomic_write, file_lock
from dapi_config._goyaml import render_go_yaml
from dapi_config._yaml import load_document
from dapi_config.errors import ConfigError
from dapi_config.models import REVEAL_SECRETS, InferenceNodeConfig
from dapi_config.static import LEGACY_PASSWORD_KEY

if TYPE_CHECKING:
    from dapi_config.legacy.gonka_db import GonkaDbRollback
    from dapi_config.settings import Settings

log = logging.getLogger("dapi_config.legacy")

MIRROR_SUFFIX = ".legacy.yaml"


class ExportSource(Protocol):
    """What the rollback file and the mirror need of the manager (which passes itself)."""

    @property
    def loaded_document(self) -> dict[str, Any]: ...

    def export_full_config(
        self, *, include_secrets: bool = False, include_security_keys: bool = True
    ) -> dict[str, Any]: ...

    def on_commit(self, hook: Callable[[], None]) -> Callable[[], None]: ...

    def sealed_keyring_password(self) -> str | None: ...


def mirror_path_for(state_path: Path, settings: Settings) -> Path:
    """The legacy-layout mirror of ``dual`` mode: ``API_STATE_MIRROR_PATH``, else
    ``<state file>.legacy.yaml`` beside the state file."""
    return settings.mirror_path or state_path.with_name(state_path.name + MIRROR_SUFFIX)


# --- rollback and the legacy layout ----------------------------------------------------------


#: Node fields of later eras (or the 2024 one), written only when set: the binary of an era
#: without them reads the file exactly as the one it wrote itself.
_NODE_FIELDS_WHEN_SET = ("base_url", "auth_token", "url")


def legacy_node(node: InferenceNodeConfig, *, reveal_secrets: bool) -> dict[str, Any]:
    """One node in the predecessor's layout: every field it knows, the fields of other eras
    when set, and the fields nobody here knows as they were read. ``auth_token`` is in clear
    only with ``reveal_secrets`` (the rollback file), else ``<redacted>``."""
    data = node.model_dump(mode="json", context=REVEAL_SECRETS if reveal_secrets else None)
    for name in _NODE_FIELDS_WHEN_SET:
        if not data.get(name):
            data.pop(name, None)
    return data


def with_models_as_names(node: dict[str, Any]) -> dict[str, Any]:
    """A legacy-layout node with its models as a list of names (the ``[]string`` of binaries
    before 2025-03), when nothing but names is there to write; else unchanged."""
    models = node.get("models")
    if isinstance(models, dict) and all(cfg == {"args": []} for cfg in models.values()):
        node["models"] = list(models)
    return node


#: Fields of later eras inside the top-level sections, written only when set (see above).
_SECTION_FIELDS_WHEN_SET = {
    "validation_params": ("logprobs_mode",),
    "bandwidth_params": ("max_inferences_per_block",),
}


def trim_unset_later_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Drop from a legacy-layout document the later eras' fields that hold their zero value
    (``poc_params`` without models included): the Go binary of any era reads the same."""
    for section, names in _SECTION_FIELDS_WHEN_SET.items():
        values = data.get(section)
        if isinstance(values, dict):
            for name in names:
                if not values.get(name):
                    values.pop(name, None)
    poc = data.get("poc_params")
    if isinstance(poc, dict) and poc == {"models": []}:
        del data["poc_params"]
    return data


def render_legacy_yaml(data: Mapping[str, Any]) -> str:
    """The predecessor's single-file layout (sorted keys, 4-space indent, quoted numeric
    strings) of ``data`` (plain data, e.g. :meth:`ConfigManager.export_full_config`)."""
    return render_go_yaml(data)


def rollback_document(cm: ExportSource) -> dict[str, Any]:
    """Static + dynamic configuration for the old binary: every secret it needs included
    (the worker key; ``chain_node.KeyringPassword`` only when the config file itself holds
    it), the keyring password from the environment never."""
    # The old binary knows no per-node security keys: keep them out of this plaintext file.
    data = cm.export_full_config(include_secrets=True, include_security_keys=False)
    document = cm.loaded_document
    chain = document.get("chain_node")
    if isinstance(chain, dict) and chain.get(LEGACY_PASSWORD_KEY) is not None:
        data.setdefault("chain_node", {})[LEGACY_PASSWORD_KEY] = str(chain[LEGACY_PASSWORD_KEY])
    elif (sealed := cm.sealed_keyring_password()) is not None:
        # Moved out of the file by `secrets seal`: the old binary reads it there again.
        data.setdefault("chain_node", {})[LEGACY_PASSWORD_KEY] = sealed
    return data


@dataclass(frozen=True)
class RollbackReport:
    """What a rollback wrote: the legacy YAML, and the ``gonka.db`` brought up to date (None
    when the state did not come from one, or only the YAML was asked for)."""

    yaml: Path
    gonka_db: GonkaDbRollback | None = None


def write_rollback(cm: ExportSource, out: Path) -> Path:
    """Write the rollback file atomically (0600: it holds the worker key). Raises
    :class:`ConfigError` when it cannot be written."""
    data = rollback_document(cm)
    text = render_legacy_yaml(data)
    # The old binary must read back exactly what the state holds: check before writing.
    if load_document(text, str(out)).data != json.loads(json.dumps(data)):
        raise ConfigError(f"{out}: internal error: the rollback file would not read back")
    try:
        atomic_write(out, text, mode=0o600)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the rollback file: {exc.strerror or exc}") from None
    return out


class _Mirror:
    """``dual`` mode: the legacy-layout file rewritten after every committed change."""

    def __init__(self, cm: ExportSource, path: Path) -> None:
        self.cm = cm
        self.path = path
        self.lock = path.with_name(f".{path.name}.lock")

    def write(self) -> None:
        # Rendering happens under the lock, after our commit: whichever process writes last
        # has read a state that includes every commit made before it, so the file never
        # goes back to an older state.
        with file_lock(self.lock):
            atomic_write(self.path, render_legacy_yaml(rollback_document(self.cm)), mode=0o600)


def attach_mirror(cm: ExportSource, path: Path) -> None:
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
    cm.on_commit(mirror.write)
    log.info("API_STATE_MODE=dual: legacy-layout mirror kept at %s", path)
