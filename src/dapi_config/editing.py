"""``dapi-config edit``: the dynamic state as a YAML document to edit by hand, checked and applied
as one transaction guarded by the revision it was read at (SPEC §15).

The document has the keys of ``GET /admin/v1/state`` that can be written (those of the
catalogue), and with ``nodes`` the registry. Secrets never appear: a node's token reads
``<redacted>``, which keeps the stored one. An edit is a replacement: a key or field removed
from the document goes back to its default (not "left alone", as in a merge patch). Running
the editor is the CLI's job; reading the document, checking an edit and applying it are here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dapi_config._goyaml import render_go_yaml
from dapi_config._yaml import parse_yaml
from dapi_config.catalogue import KINDS
from dapi_config.errors import ConfigError, DapiConfigError, ValidationError
from dapi_config.manager import ConfigManager, validate_nodes

#: The top-level keys of the document (``nodes`` only with ``--nodes``).
STATE_KEYS = tuple(dict.fromkeys(kind.document_path[0] for kind in KINDS))
NODES = "nodes"

HEADER = """\
# The dynamic state, read at revision {revision}. Change what you need, save and quit: it is
# checked, shown as a diff and applied in one transaction, unless the state changed since.
# A line removed goes back to its default. Quit without saving (or save it unchanged) to
# cancel. Tokens read <redacted>: left so, the stored token stays.
"""
ERROR_MARK = "# ERROR: "


@dataclass(frozen=True)
class EditDocument:
    """The document as opened: its text, its values and the revision it was read at."""

    text: str
    values: dict[str, Any]
    revision: int
    nodes: bool


@dataclass(frozen=True)
class EditPlan:
    """A checked edit: the unified diff, and whether anything changes."""

    diff: str
    after: dict[str, Any]

    @property
    def changed(self) -> bool:
        return bool(self.diff)


def open_document(cm: ConfigManager, *, nodes: bool = False) -> EditDocument:
    """The state as a document to edit (one consistent read)."""
    # The revision first: anything written after it makes the apply refuse.
    summary = cm.state_summary()
    values = {key: summary[key] for key in STATE_KEYS}
    if nodes:
        values[NODES] = [n.model_dump(mode="json") for n in cm.get_nodes()]
    revision = int(summary["revision"])
    return EditDocument(
        HEADER.format(revision=revision) + render_go_yaml(values), values, revision, nodes
    )


def without_comments(text: str) -> str:
    """``text`` without the header and error lines this module writes (the user's own
    comments are only in a YAML document as comments: dropped by the parser anyway)."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


def with_errors(text: str, error: DapiConfigError) -> str:
    """``text`` again, with ``error`` as comment lines on top (``kubectl edit`` does so)."""
    items = getattr(error, "errors", None) or []
    lines = [f"{ERROR_MARK}{item.get('field')}: {item.get('message')}" for item in items]
    if not lines:
        lines = [f"{ERROR_MARK}{line}" for line in str(error).splitlines()]
    lines.append("# Fix it and save again, or save it unchanged to give up.")
    return "\n".join(lines) + "\n" + without_comments(text)


def check_edit(cm: ConfigManager, document: EditDocument, text: str) -> EditPlan:
    """Parse and check an edited ``text``, writing nothing. Raises :class:`ConfigError` (not
    YAML, not a mapping) or :class:`ValidationError` (every bad value, unknown keys)."""
    parsed = parse_yaml(text, "the edited document")
    if parsed is None:
        parsed = {}
    if not isinstance(parsed, dict):
        raise ConfigError("the edited document: expected a mapping of state keys")
    allowed = set(STATE_KEYS) | ({NODES} if document.nodes else set())
    unknown = sorted(set(parsed) - allowed)
    if unknown:
        raise ValidationError(
            f"not a state key: {', '.join(unknown)}",
            [{"field": key, "message": "not a state key"} for key in unknown],
        )
    missing = [key for key in document.values if key not in parsed]
    if missing:
        raise ValidationError(
            f"keep every key ({', '.join(missing)} removed); remove a field inside one to "
            "reset that field",
            [{"field": key, "message": "removed; keep it"} for key in missing],
        )
    patch = _replacement_patch(document.values, parsed)
    cm.check_state_patch({k: v for k, v in patch.items() if k != NODES})
    if document.nodes and NODES in patch:
        validate_nodes(parsed.get(NODES) or [])
    after = {key: parsed[key] for key in document.values}
    diff = "".join(
        difflib.unified_diff(
            render_go_yaml(document.values).splitlines(keepends=True),
            render_go_yaml(after).splitlines(keepends=True),
            "before",
            "after",
        )
    )
    return EditPlan(diff, after)


def apply_edit(cm: ConfigManager, document: EditDocument, plan: EditPlan) -> dict[str, Any]:
    """Apply a checked edit in one transaction, refused (:class:`PreconditionFailedError`,
    nothing written) when the state changed since the document was read. Returns the state
    summary after it."""
    patch = _replacement_patch(document.values, plan.after)
    nodes = patch.pop(NODES, None)
    with cm.transaction():
        summary = cm.patch_state(patch, if_revision=document.revision)  # checks first
        if document.nodes and nodes is not None:
            cm.set_nodes(plan.after.get(NODES) or [])
            summary = cm.state_summary()
    return summary


def _replacement_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``before`` into ``after`` (a removed member is null, so it
    goes back to its default), for the top-level keys that changed."""
    return {
        key: _replacing(before.get(key), after.get(key))
        for key in before
        if after.get(key) != before.get(key)
    }


def _replacing(before: Any, after: Any) -> Any:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        out = {k: _replacing(before.get(k), v) for k, v in after.items()}
        out.update({k: None for k in before if k not in after})
        return out
    return after
