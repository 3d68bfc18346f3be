"""``NODE_CONFIG_PATH`` and ``dapi-config nodes import``: a JSON node file merged into the
registry, all or nothing (once, for the variable: as the predecessor's ``merged_node_config``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dapi_config._validation import json_integers, node_inputs, sets_admin_state
from dapi_config._yaml import load_document
from dapi_config.errors import ConfigError, DuplicateNodeError, ValidationError
from dapi_config.models import InferenceNodeConfig, NodeInput, describe

if TYPE_CHECKING:
    from dapi_config.store.backend import StateCore


from dapi_config.legacy.parse import (
    MERGED_FLAG_ORIGIN,
    MERGED_FLAG_ORIGINS,
    MIGRATION_ACTOR,
    NODE_CONFIG_KIND,
    LegacyParser,
    checksum_of,
)
from dapi_config.settings import NodeConfigMode

log = logging.getLogger("dapi_config.legacy")

# --- NODE_CONFIG_PATH and ``nodes import`` ---------------------------------------------------


def read_node_file(path: Path) -> list[InferenceNodeConfig]:
    """The nodes of the node file at ``path`` (see :func:`node_file_nodes`). Raises
    :class:`ConfigError` for a missing or unreadable file, and what that function raises."""
    return node_file_nodes(_read_bytes(path), str(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: node file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the node file: {exc}") from None


def node_file_nodes(raw: bytes, source: str) -> list[InferenceNodeConfig]:
    """Parse and validate a list of nodes, or one node: JSON (the predecessor's node-config
    file) or YAML (``source`` named ``*.yaml``/``*.yml``, or text not starting with ``[``/``{``).

    Keys in a node that no model knows are kept with it (stored and shown). Raises
    :class:`ConfigError` for malformed text, :class:`DuplicateNodeError` for an id listed twice.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: cannot read the node file: {exc}") from None

    if source.lower().endswith((".yaml", ".yml")) or text.lstrip("\ufeff \t\r\n")[:1] not in (
        "[",
        "{",
    ):
        data = load_document(text, source).data
    else:
        data = _json_loads(text.lstrip("\ufeff"), source)
    if isinstance(data, dict):
        data = [data]  # one node, as ``nodes add`` takes it
    if not isinstance(data, list):
        raise ConfigError(
            f"{source}: expected a node or a list of nodes, got {type(data).__name__}"
        )
    p = LegacyParser(source)
    nodes = [p.node(i, item) for i, item in enumerate(data)]
    seen: set[str] = set()
    for node in nodes:
        if node.id in seen:
            raise DuplicateNodeError(
                node.id, f"{source}: node id {node.id!r} is listed twice; nothing was imported"
            )
        seen.add(node.id)
    return nodes


def _json_loads(text: str, source: str) -> Any:
    """``text`` as JSON; a duplicate key, NaN or a malformed document is a :class:`ConfigError`
    naming ``source``, the line and the column."""

    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ConfigError(f"{source}: duplicate key {k!r} in a JSON object")
            out[k] = v
        return out

    def no_constant(name: str) -> Any:
        raise ConfigError(f"{source}: not valid JSON: {name} is not a JSON number")

    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, nesting
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None


def parse_node_input(raw: bytes, source: str) -> tuple[list[NodeInput], bool]:
    """The nodes given to ``dapi-config nodes add``: JSON (read by a JSON parser: a file
    named ``*.json``, or text starting with ``{`` or ``[``) or YAML, one node or a list, each
    validated strictly as the HTTP API does. Returns the nodes and whether one was given
    alone. Raises :class:`ConfigError` (unreadable), :class:`ValidationError` (naming
    ``nodes[i].field``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    if source.endswith(".json") or text.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
        data = json_integers(_json_loads(text.lstrip("\ufeff"), source))
    else:
        data = load_document(raw, source).data
    if data is None:
        raise ConfigError(f"{source}: no node given (empty input)")
    alone = isinstance(data, dict)
    items = [data] if alone else data
    if not isinstance(items, list):
        raise ConfigError(
            f"{source}: expected a node (a mapping) or a list of nodes, got {type(data).__name__}"
        )
    nodes, problems = node_inputs(items, lambda i: "node" if alone else f"nodes[{i}]")
    if problems:
        raise ValidationError(f"{source}: invalid input: {describe(problems)}", problems)
    return nodes, alone


def import_node_file(
    store: StateCore,
    path: Path,
    *,
    replace: bool = False,
    before_risky_operation: Callable[[str], None] | None = None,
) -> list[InferenceNodeConfig]:
    """Merge (or with ``replace``, substitute) the nodes of a node file, all or nothing, and
    record the import. Raises :class:`ConfigError`, :class:`DuplicateNodeError`."""
    return import_node_data(
        store,
        _read_bytes(path),
        str(path),
        origin=str(path.resolve()),
        replace=replace,
        before_risky_operation=before_risky_operation,
    )


def import_node_data(
    store: StateCore,
    raw: bytes,
    source: str,
    *,
    origin: str,
    replace: bool = False,
    before_risky_operation: Callable[[str], None] | None = None,
) -> list[InferenceNodeConfig]:
    """:func:`import_node_file` of a node file's bytes, named ``source`` in errors and
    recorded as coming from ``origin``."""
    nodes = node_file_nodes(raw, source)
    if replace and before_risky_operation is not None:
        before_risky_operation("node-file-replace")
    with store.transaction():
        if replace:
            # A node the file does not enable or disable keeps the operator's admin state.
            kept = {n.id for n in nodes if not sets_admin_state(n)}
            store.replace_nodes(nodes, keep_admin_state=kept)
        else:
            existing = {n.id for n in store.nodes()}
            for node in nodes:
                if node.id in existing:
                    raise DuplicateNodeError(
                        node.id,
                        f"{source}: node id {node.id!r} is already registered; nothing was "
                        "imported (use --replace to replace the whole registry)",
                    )
            store.add_nodes(nodes)
        store.record_import(
            NODE_CONFIG_KIND,
            origin,
            checksum_of(raw),
            {"nodes": [n.id for n in nodes], "replace": replace},
        )
    return nodes


def import_node_config_env(
    store: StateCore,
    path: Path | None,
    *,
    mode: NodeConfigMode = "once",
    before_risky_operation: Callable[[str], None] | None = None,
) -> list[InferenceNodeConfig] | None:
    """``NODE_CONFIG_PATH`` (``path``) at start-up.

    ``once`` (the predecessor's ``merged_node_config``): merge its nodes the first time; later
    starts leave the registry alone, with a WARNING when the file changed since it was merged
    (naming the command that applies it). ``sync``: the file is authoritative: when it differs
    from what was last applied, the registry is replaced by it in one transaction, after a
    backup. Returns the nodes imported, or None when nothing was done. Raises
    :class:`ConfigError` (a duplicate id included: nothing is imported then).
    """
    if path is None:
        return None
    done = store.find_import(NODE_CONFIG_KIND)
    if done is not None:
        try:
            checksum = checksum_of(path.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"environment NODE_CONFIG_PATH: {path}: cannot read it: {exc.strerror or exc}"
            ) from None
        if checksum == done.get("checksum"):
            log.info(
                "NODE_CONFIG_PATH=%s skipped: this file was already merged (%s); use "
                "`dapi-config nodes import FILE --replace` to apply it again",
                path,
                done.get("imported_at", "earlier"),
            )
            return None
        if mode == "once" and (done.get("details") or {}).get("from") in MERGED_FLAG_ORIGINS:
            # The predecessor's merged_node_config flag says the file was merged, not which
            # bytes: take the file as it is now as the merged one, so later edits are noticed.
            with store.transaction(), store.acting_as(MIGRATION_ACTOR):
                store.record_import(
                    NODE_CONFIG_KIND,
                    str(path.resolve()),
                    checksum,
                    {"adopted": MERGED_FLAG_ORIGIN, "nodes": None},
                )
            log.info("NODE_CONFIG_PATH=%s: taken as the file the predecessor merged", path)
            return None
        if mode == "once":
            log.warning(
                "NODE_CONFIG_PATH=%s changed since it was merged (%s) and was NOT applied "
                "(NODE_CONFIG_MODE=once): apply it with `dapi-config nodes import %s "
                "--replace`, or set NODE_CONFIG_MODE=sync to apply it at every start",
                path,
                done.get("imported_at", "earlier"),
                path,
            )
            return None
    replace = done is not None  # sync: the file replaces the registry
    try:
        with store.acting_as(MIGRATION_ACTOR):
            nodes = import_node_file(
                store, path, replace=replace, before_risky_operation=before_risky_operation
            )
    except DuplicateNodeError as exc:
        raise ConfigError(f"environment NODE_CONFIG_PATH: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"environment NODE_CONFIG_PATH: {path}: {exc}") from None
    verb = "replaced the registry with" if replace else "merged into the registry"
    log.warning("NODE_CONFIG_PATH=%s: %s %d node(s)", path, verb, len(nodes))
    return nodes
