"""The merged documents built from the static config and one consistent read of the state: the
state summary (``status``, ``GET /admin/v1/state``) and the full configuration in the
predecessor's single-file layout (exports, rollback, the ``dual`` mirror)."""

from __future__ import annotations

import json
from typing import Any

from dapi_config.catalogue import KINDS, put_in_document
from dapi_config.legacy.layout import (
    legacy_node,
    trim_unset_later_fields,
    with_models_as_names,
)
from dapi_config.legacy.parse import LEGACY_KIND
from dapi_config.models import (
    REDACTED,
    BandwidthParamsCache,
    InferenceNodeConfig,
    PoCParamsCache,
    StaticConfig,
    ValidationParamsCache,
)
from dapi_config.schedule import go_stack_order
from dapi_config.secrets import Secrets
from dapi_config.store.backend import SEED_KINDS, StateCore


def state_summary(store: StateCore) -> dict[str, Any]:
    """The dynamic state as plain data, from one read transaction: every kind of the
    catalogue where ``GET /state`` shows it, then the node count and the latest revision."""
    with store.snapshot():
        out: dict[str, Any] = {}
        for kind in KINDS:
            put_in_document(out, kind, kind.read(store))
        out["node_count"] = store.node_count()
        out["revision"] = store.latest_revision()
        return out


def full_config(
    static: StaticConfig,
    store: StateCore,
    secrets: Secrets,
    *,
    include_secrets: bool,
    include_security_keys: bool,
) -> dict[str, Any]:
    """Static + dynamic configuration in the legacy layout (see
    :meth:`ConfigManager.export_full_config`)."""
    with store.snapshot():
        # One read transaction: a consistent view even while other writers commit.
        chain = store.chain_state()
        nodes = store.nodes()
        seeds = {kind: store.seed(kind) for kind in SEED_KINDS}
        plan = store.upgrade_plan()
        versions = store.node_versions()
        validation = store.params("validation", ValidationParamsCache)
        bandwidth = store.params("bandwidth", BandwidthParamsCache)
        poc = store.params("poc", PoCParamsCache)
        merged = store.find_import("node_config") is not None
        imported = store.find_import(LEGACY_KIND)
        keys = secrets.worker_keys(static.ml_node_key_config, include_secrets=include_secrets)
        security = (
            secrets.exported_security_keys(include_secrets=include_secrets)
            if include_security_keys
            else {}
        )
    api = static.api.model_dump(mode="json", exclude_none=True)
    if static.api.admin_token is not None:
        api["admin_token"] = (
            static.api.admin_token.get_secret_value() if include_secrets else REDACTED
        )
    out: dict[str, Any] = {
        "api": api,
        "nodes": [legacy_node(n, reveal_secrets=include_secrets) for n in nodes],
        "merged_node_config": merged,
        "chain_node": static.chain_node.model_dump(mode="json", exclude={"keyring_password"}),
        "upcoming_seed": seeds["upcoming"].model_dump(mode="json"),
        "current_seed": seeds["current"].model_dump(mode="json"),
        "previous_seed": seeds["previous"].model_dump(mode="json"),
        "current_height": int(chain.get("current_height", 0)),
        "upgrade_plan": plan.model_dump(mode="json"),
        "ml_node_key_config": keys.model_dump(mode="json"),
        "nats": static.nats.model_dump(mode="json"),
        "current_node_version": chain.get("current_node_version", ""),
        # The Go stack's order (highest first), which the old binary pops from the end.
        "node_versions": {
            "versions": [v.model_dump(mode="json") for v in go_stack_order(versions)]
        },
        "validation_params": validation.model_dump(mode="json"),
        "bandwidth_params": bandwidth.model_dump(mode="json"),
        "poc_params": poc.model_dump(mode="json"),
    }
    trim_unset_later_fields(out)
    if imported is not None and imported["details"].get("models_as_names"):
        # The imported file was of an era whose binary reads models only as plain names.
        out["nodes"] = [with_models_as_names(n) for n in out["nodes"]]
    if security:
        out["mlnode_security"] = security
    if "last_processed_height" in chain:
        out["last_processed_height"] = int(chain["last_processed_height"])
    if "last_used_version" in chain:
        out["last_used_version"] = chain["last_used_version"]
    for key, value in (static.model_extra or {}).items():
        out.setdefault(key, value)
    if isinstance(out.get("key_config"), dict):
        # A file of the key_config era: its binary reads the worker key there.
        out["key_config"] = dict(out["ml_node_key_config"])
    return out


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``value``'s leaves by dotted path (lists kept whole: a schedule is one value)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def state_diff(
    before: dict[str, Any] | None,
    before_nodes: list[InferenceNodeConfig],
    after: dict[str, Any] | None,
    after_nodes: list[InferenceNodeConfig],
) -> list[str]:
    """What changes from ``before`` to ``after`` (state summaries and node lists; a summary of
    None: values not compared, only the nodes), one line each: ``height: 120 -> 100``,
    ``node n3: removed``, ``node n1: changed (host, max_concurrent)``. Empty: nothing."""
    lines: list[str] = []
    if before is not None and after is not None:
        old, new = _flat(before), _flat(after)
        for key in sorted(old.keys() | new.keys()):
            if key in ("node_count", "revision"):
                continue  # said by the node lines, and by the caller
            if old.get(key) != new.get(key):
                lines.append(f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}")
    was = {n.id: n.model_dump(mode="json") for n in before_nodes}
    will = {n.id: n.model_dump(mode="json") for n in after_nodes}
    for node_id in [n.id for n in before_nodes if n.id not in will]:
        lines.append(f"node {node_id}: removed")
    for node in after_nodes:
        if node.id not in was:
            lines.append(f"node {node.id}: added")
        elif was[node.id] != will[node.id]:
            fields = sorted(k for k in will[node.id] if will[node.id][k] != was[node.id].get(k))
            lines.append(f"node {node.id}: changed ({', '.join(fields)})")
    return lines
