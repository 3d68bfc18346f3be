"""Importing the later predecessor's ``gonka.db`` (SPEC §6): its nodes (tokens sealed), every
``kv_config`` key (the worker key sealed; keys without a place here kept as they are), its
seeds with their history and ``claimed`` flags, and its BLS dealer openings (sealed), in one
durable transaction after a backup, once.

That predecessor kept its dynamic state in ``gonka.db`` and zeros in its YAML file, so the
values found here win over the YAML's; an empty value never replaces a non-empty one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dapi_config.legacy.parse import (
    MERGED_FLAG_ORIGIN,
    NODE_CONFIG_KIND,
    SEED_KINDS_BY_KV,
    LegacyParser,
    LegacyState,
    apply_legacy_state,
    current_state,
    without_emptying,
)
from dapi_config.models import (
    BandwidthParamsCache,
    PoCParamsCache,
    SeedInfo,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.settings import Settings
from dapi_config.store.backend import SEED_KINDS, SeedKind, StateBackend
from dapi_config.store.predecessor_db import PredecessorRows, read_predecessor_db, seed_history

log = logging.getLogger("dapi_config.legacy")

#: ``legacy_imports.kind`` of an imported ``gonka.db``.
GONKA_DB_KIND = "gonka_db"
#: The file's name beside the config that is imported without being named.
GONKA_DB_NAME = "gonka.db"
#: ``kv_config`` keys and where they go; any other key is kept as it is (``predecessor_kv``).
_KV_INTEGERS = ("current_height", "last_processed_height")
_KV_STRINGS = ("current_node_version", "last_used_version")
_KV_PARAMS = {
    "validation_params": ValidationParamsCache,
    "bandwidth_params": BandwidthParamsCache,
    "poc_params": PoCParamsCache,
}
_KV_WORKER = "ml_node_key_config"
_KV_MERGED = "node_config_merged"

#: ``seal_worker(public, private)`` stores the worker pair sealed, in the caller's transaction.
SealWorker = Callable[[str, str], None]


@dataclass
class GonkaDbReport:
    """What one import did: ``imported``, ``already`` (the state took this file before: a
    no-op) or ``none`` (no file to import)."""

    source: str
    action: Literal["imported", "already", "none"]
    nodes: int = 0
    keys: list[str] = field(default_factory=list)
    kept_keys: list[str] = field(default_factory=list)
    seeds: int = 0
    openings: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class GonkaDbContent:
    """A ``gonka.db`` read and checked."""

    state: LegacyState
    worker: tuple[str, str] | None
    kept_kv: dict[str, str]
    merged: bool
    rows: PredecessorRows
    checksum: str


def gonka_db_to_import(settings: Settings, config_path: Path) -> Path | None:
    """The ``gonka.db`` that an open imports: ``API_SQLITE_PATH`` when it names a file, else a
    ``gonka.db`` beside the config file, else None."""
    named = settings.gonka_db_path
    if named is not None:
        if named.is_file():
            return named
        log.info("API_SQLITE_PATH=%s: no such file; nothing to import from it", named)
        return None
    beside = config_path.parent / GONKA_DB_NAME
    return beside if beside.is_file() else None


def read_gonka_db(path: Path) -> GonkaDbContent:
    """Read and check ``path``; raises :class:`ConfigError` naming the table, key and value."""
    rows = read_predecessor_db(path)
    p = LegacyParser(f"{path}")
    state = LegacyState()
    if rows.nodes:
        state.nodes = [
            p.node(i, _node_data(row, p, i), table="inference_nodes")
            for i, row in enumerate(rows.nodes)
        ]
    worker: tuple[str, str] | None = None
    kept: dict[str, str] = {}
    merged = False
    for key, raw in rows.kv.items():
        where = f"kv_config[{key}]"
        try:
            value = json.loads(raw)
        except ValueError:
            raise p.fail(where, "expected JSON", raw) from None
        if key in _KV_INTEGERS:
            setattr(state, key, p.integer(where, value))
        elif key in _KV_STRINGS:
            setattr(state, key, p.string(where, value))
        elif key == "upgrade_plan":
            plan = p.mapping(where, value)
            if plan.get("binaries") is None:
                plan = {**plan, "binaries": {}}
            state.upgrade_plan = p.model(where, plan, UpgradePlan)
        elif key in _KV_PARAMS:
            setattr(state, key, p.model(where, value, _KV_PARAMS[key]))
        elif key in SEED_KINDS_BY_KV:
            state.seeds[SEED_KINDS_BY_KV[key]] = p.model(where, value, SeedInfo)
        elif key == _KV_WORKER:
            pair = p.mapping(where, value)
            public, private = pair.get("worker_public") or "", pair.get("worker_private") or ""
            if public and private:
                worker = (p.string(f"{where}.worker_public", public), p.string(where, private))
        else:
            if key == _KV_MERGED:
                merged = value is True
            kept[key] = raw
    for i, row in enumerate(rows.seeds):
        kind, seed = _seed(p, f"seed_info[active {i}]", row)
        state.seeds[kind] = seed  # the table beats kv_config
    digest = hashlib.sha256(
        json.dumps(
            {
                "nodes": rows.nodes,
                "kv": rows.kv,
                "seeds": rows.seeds,
                "history_rows": rows.history_rows,
                "openings": [
                    [o.epoch_id, o.recipient_index, o.ciphertext_index, o.slot_index]
                    for o in rows.openings
                ],
            },
            sort_keys=True,
            default=repr,
        ).encode("utf-8")
    ).hexdigest()
    return GonkaDbContent(state, worker, kept, merged, rows, f"sha256:{digest}")


def _seed(p: LegacyParser, where: str, row: dict[str, Any]) -> tuple[SeedKind, SeedInfo]:
    kind = next((k for k in SEED_KINDS if k == row["type"]), None)
    if kind is None:
        raise p.fail(f"{where}.type", "expected current, previous or upcoming", row["type"])
    seed = p.model(
        where,
        {
            "seed": row["seed"],
            "epoch_index": int(row["epoch_index"]) % 2**64,  # a uint64 in an INTEGER
            "signature": row["signature"],
            "claimed": bool(row["claimed"]),
        },
        SeedInfo,
    )
    return kind, seed


def _import_seed_history(store: StateBackend, path: Path, p: LegacyParser) -> int:
    """Stream the inactive seeds into ``store`` (in the caller's transaction), a batch at a
    time: memory stays flat however long the binary ran. Returns how many."""
    done = 0
    for batch in seed_history(path):
        seeds = [_seed(p, f"seed_info[history {done + i}]", row) for i, row in enumerate(batch)]
        store.add_seed_history(seeds)
        done += len(seeds)
    return done


def _node_data(row: dict[str, Any], p: LegacyParser, index: int) -> dict[str, Any]:
    where = f"inference_nodes[{index}]"
    data = {k: v for k, v in row.items() if k not in ("created_at", "updated_at")}
    for column, name in (("models_json", "models"), ("hardware_json", "hardware")):
        raw = data.pop(column, None)
        try:
            data[name] = json.loads(raw) if raw else None
        except (TypeError, ValueError):
            raise p.fail(f"{where}.{column}", "expected JSON", raw) from None
    return data


def import_gonka_db(
    store: StateBackend,
    path: Path,
    *,
    seal_worker: SealWorker,
    seal: Callable[[str, str], str],
    before_risky_operation: Callable[[str], None] | None = None,
) -> GonkaDbReport:
    """Import ``path`` into ``store`` once (a second run is a no-op). Raises
    :class:`ConfigError` for a file that is not the predecessor's or holds bad values
    (nothing changed)."""
    source = str(path.resolve())
    found = store.find_import(GONKA_DB_KIND)
    if found is not None:
        if found["source_path"] != source:
            log.warning(
                "%s: not imported: the state already took %s (a gonka.db is imported once)",
                path,
                found["source_path"],
            )
        return GonkaDbReport(str(path), "already")
    content = read_gonka_db(path)
    if before_risky_operation is not None:
        before_risky_operation("gonka-db-import")
    with store.transaction(durable=True):
        state, skipped = without_emptying(content.state, current_state(store))
        if skipped:
            log.warning(
                "%s: empty %s left out: the state holds values there already",
                path,
                ", ".join(skipped),
            )
        history = _import_seed_history(store, path, LegacyParser(str(path)))
        apply_legacy_state(store, state)
        if content.worker is not None:
            seal_worker(*content.worker)
        for key, raw in content.kept_kv.items():
            store.put_predecessor_kv(key, raw)
        if content.rows.openings:
            store.put_bls_openings(content.rows.openings, seal=seal)
        if content.merged and store.find_import(NODE_CONFIG_KIND) is None:
            # The flag says the file was merged, not which bytes: the next start with
            # NODE_CONFIG_PATH takes the file as it is then as the merged one.
            store.record_import(
                NODE_CONFIG_KIND, source, "", {"from": MERGED_FLAG_ORIGIN, "source": "gonka.db"}
            )
        report = GonkaDbReport(
            str(path),
            "imported",
            nodes=len(state.nodes or []),
            keys=sorted(content.rows.kv),
            kept_keys=sorted(content.kept_kv),
            seeds=len(state.seeds) + history,
            openings=len(content.rows.openings),
            skipped=skipped,
        )
        store.record_import(GONKA_DB_KIND, source, content.checksum, report.as_dict())
    log.warning(
        "%s: the predecessor's gonka.db imported into %s (%d node(s), %d kv key(s), %d BLS "
        "opening(s)); it was not changed",
        path,
        store.path,
        report.nodes,
        len(report.keys),
        report.openings,
    )
    return report


__all__ = [
    "GONKA_DB_KIND",
    "GonkaDbReport",
    "gonka_db_to_import",
    "import_gonka_db",
    "read_gonka_db",
]
