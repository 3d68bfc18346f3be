"""The later predecessor's ``gonka.db`` (SPEC §6), both ways.

Import: its nodes (tokens sealed), every ``kv_config`` key (the worker key sealed; keys without
a place here kept as they are), its seeds with their history and ``claimed`` flags, and its BLS
dealer openings (sealed), in one durable transaction after a backup, once. That predecessor
kept its dynamic state in ``gonka.db`` and zeros in its YAML file, so the values found here win
over the YAML's; an empty value never replaces a non-empty one.

Rollback: that binary reads ``gonka.db``, not a YAML file, so :func:`roll_back_gonka_db` writes
the state's nodes, heights, versions, plan, caches, seeds and worker key back into it, after a
backup, in its own encodings (Go's ``json.Marshal``). A value that did not change since the
import is left byte for byte as the binary wrote it; a changed one is written into the object
it replaces, so fields this side does not know stay. Node admin state, the version schedule and
everything else the binary does not keep in its database go to the rollback YAML.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dapi_config import _progress as progress
from dapi_config.errors import ConfigError
from dapi_config.legacy.migrate import apply_legacy_state, current_state
from dapi_config.legacy.parse import (
    MERGED_FLAG_ORIGIN,
    NODE_CONFIG_KIND,
    SEED_KINDS_BY_KV,
    LegacyParser,
    LegacyState,
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
from dapi_config.store.backend import SEED_KINDS, SeedKind, StateBackend, StateCore
from dapi_config.store.gonka_db import (
    NODE_COLUMNS,
    PredecessorChanges,
    PredecessorRows,
    read_predecessor_db,
    seed_history,
    write_predecessor_db,
)

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
            for i, row in enumerate(progress.counted("reading gonka.db nodes", rows.nodes))
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


def _import_seed_history(store: StateBackend, path: Path, p: LegacyParser, total: int) -> int:
    """Stream the inactive seeds into ``store`` (in the caller's transaction), a batch at a
    time: memory stays flat however long the binary ran. Returns how many."""
    done = 0
    progress.report("importing the seed history", 0, total)
    for batch in seed_history(path):
        seeds = [_seed(p, f"seed_info[history {done + i}]", row) for i, row in enumerate(batch)]
        store.add_seed_history(seeds)
        done += len(seeds)
        progress.report("importing the seed history", done, total)
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
        history = _import_seed_history(
            store, path, LegacyParser(str(path)), content.rows.history_rows
        )
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


# --- rollback: the state written back into gonka.db ----------------------------------------

#: ``legacy_imports.details["from"]`` of the record a write-back leaves: the file as written.
ROLLBACK_ORIGIN = "rollback"
#: The backup a write-back takes first: ``gonka.db.before-rollback.<UTC timestamp>``.
ROLLBACK_BACKUP_INFIX = ".before-rollback."
#: kv keys the rollback writes from the legacy-layout document (same names on both sides).
_KV_FROM_DOCUMENT = (
    *_KV_INTEGERS,
    *_KV_STRINGS,
    "upgrade_plan",
    *_KV_PARAMS,
    _KV_WORKER,
)
_KV_SEED_KEYS = {kind: key for key, kind in SEED_KINDS_BY_KV.items()}


@dataclass
class GonkaDbRollback:
    """What a rollback wrote into a ``gonka.db`` (``changed`` False: it already matched)."""

    path: str
    changed: bool
    backup: str | None = None
    keys: list[str] = field(default_factory=list)
    nodes_written: list[str] = field(default_factory=list)
    nodes_deleted: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def go_json(value: Any) -> str:
    """``value`` as Go's ``json.Marshal`` writes it: compact, UTF-8, with ``<``, ``>``, ``&``
    and the JavaScript line separators escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _same(a: Any, b: Any) -> bool:
    # Go reads null and an empty slice or map alike, and a missing field as its zero value.
    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            v = {k: n for k, x in v.items() if (n := norm(x)) is not None}
        elif isinstance(v, list):
            v = [norm(x) for x in v]
        return None if v in (None, "", 0, False, [], {}) else v

    return bool(norm(a) == norm(b))


def _merged(old_raw: str | None, new: Any) -> tuple[Any, bool]:
    """The value to write for a key that held ``old_raw``, and whether it differs."""
    try:
        old = json.loads(old_raw) if old_raw is not None else None
    except ValueError:
        return new, True
    # Into an object: the fields only the binary knows stay, in its order.
    value = {**old, **new} if isinstance(old, dict) and isinstance(new, dict) else new
    return value, not _same(old, value)  # a missing key reads as its zero value


def _node_row(node: Mapping[str, Any]) -> dict[str, Any]:
    models = node.get("models") or {}
    if isinstance(models, list):  # the names-only layout of early eras
        models = {name: {"args": []} for name in models}
    return {
        "id": node["id"],
        "host": node.get("host") or "",
        "inference_segment": node.get("inference_segment") or "",
        "inference_port": int(node.get("inference_port") or 0),
        "poc_segment": node.get("poc_segment") or "",
        "poc_port": int(node.get("poc_port") or 0),
        "max_concurrent": int(node.get("max_concurrent") or 0),
        # Go writes a map with its keys sorted, a nil slice as null.
        "models_json": go_json(dict(sorted(models.items()))),
        "hardware_json": go_json(node.get("hardware") or None),
        "base_url": node.get("base_url") or "",
        "auth_token": node.get("auth_token") or "",
    }


def _node_differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    for column in NODE_COLUMNS:
        a, b = old.get(column), new[column]
        if column.endswith("_json"):
            try:
                if not _same(json.loads(a) if a else None, json.loads(b)):
                    return True
            except (TypeError, ValueError):
                return True
        elif (a if a is not None else "") != b:
            return True
    return False


def _as_int64(value: int) -> int:
    # A uint64 epoch as the signed INTEGER the Go driver stores.
    return value - 2**64 if value >= 2**63 else value


def rollback_changes(
    document: Mapping[str, Any], rows: PredecessorRows
) -> tuple[PredecessorChanges, list[str]]:
    """What to write into a ``gonka.db`` holding ``rows`` so that its binary reads
    ``document`` (the rollback's legacy-layout document), and the seed kinds changed."""
    changes = PredecessorChanges()
    for key in _KV_FROM_DOCUMENT:
        if key not in document:
            continue
        value, differs = _merged(rows.kv.get(key), document[key])
        if differs:
            changes.kv[key] = go_json(value)
    old_nodes = {str(n["id"]): n for n in rows.nodes}
    new_nodes = [_node_row(n) for n in document.get("nodes") or []]
    changes.upsert_nodes = [
        n for n in new_nodes if n["id"] not in old_nodes or _node_differs(old_nodes[n["id"]], n)
    ]
    kept = {n["id"] for n in new_nodes}
    changes.delete_nodes = [i for i in old_nodes if i not in kept]
    active = {str(r["type"]): r for r in rows.seeds}
    seeds: list[str] = []
    for kind in SEED_KINDS:
        seed = document.get(f"{kind}_seed")
        if not isinstance(seed, dict):
            continue
        row = {
            "seed": int(seed.get("seed") or 0),
            "epoch_index": _as_int64(int(seed.get("epoch_index") or 0)),
            "signature": seed.get("signature") or "",
            "claimed": bool(seed.get("claimed")),
        }
        old = active.get(kind)
        unset = row == {"seed": 0, "epoch_index": 0, "signature": "", "claimed": False}
        if old is None and unset:
            continue
        if old is not None and (
            (int(old["seed"]), int(old["epoch_index"]), str(old["signature"]), bool(old["claimed"]))
            == (row["seed"], row["epoch_index"], row["signature"], row["claimed"])
        ):
            continue
        seeds.append(kind)
        if "seed_info" in rows.tables:
            changes.seeds[kind] = row
        kv_key = _KV_SEED_KEYS[kind]
        if kv_key in rows.kv or "seed_info" not in rows.tables:
            value, differs = _merged(rows.kv.get(kv_key), dict(seed))
            if differs:
                changes.kv[kv_key] = go_json(value)
    return changes, seeds


def rollback_backup_path(path: Path, now: datetime | None = None) -> Path:
    """``<gonka.db>.before-rollback.<UTC timestamp>`` (numbered when taken already)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}{ROLLBACK_BACKUP_INFIX}{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{ROLLBACK_BACKUP_INFIX}{stamp}.{n}")
        n += 1
    return target


def check_gonka_db_for_rollback(store: StateCore, *, overwrite_changed: bool) -> Path:
    """The ``gonka.db`` this state was upgraded from, checked for a write-back: it must still
    be there and hold what the state took (or last wrote) unless ``overwrite_changed``.
    Raises :class:`ConfigError` saying what to do."""
    imported = store.find_import(GONKA_DB_KIND)
    if imported is None:
        raise ConfigError("this state was not upgraded from a gonka.db")
    path = Path(imported["source_path"])
    if not path.is_file():
        raise ConfigError(
            f"{path}: the predecessor's gonka.db this state was upgraded from is gone, so "
            "rollback cannot bring it up to date. Nothing was written. Put it back (or its "
            "copy) at that path and run rollback again; to write only the YAML file, for a "
            "release of the YAML era, add --yaml-only"
        )
    if not overwrite_changed and read_gonka_db(path).checksum != imported["checksum"]:
        raise ConfigError(
            f"{path}: changed since this state took it on {imported['imported_at']} (did "
            "the predecessor's binary run on it again?). Writing this state into it would "
            "replace those changes. Nothing was written. To replace them anyway (a backup "
            "of the file is taken first), add --overwrite-changed-gonka-db; to write only "
            "the YAML file, add --yaml-only"
        )
    return path


def roll_back_gonka_db(
    store: StateCore, path: Path, document: Mapping[str, Any]
) -> GonkaDbRollback:
    """Bring ``path`` up to date with ``document`` (see the module's docstring) after a
    backup, and record the file as written (the next rollback compares with it). Raises
    :class:`ConfigError` (the file unchanged)."""
    rows = read_predecessor_db(path)
    changes, seeds = rollback_changes(document, rows)
    report = GonkaDbRollback(str(path), bool(changes))
    if changes:
        backup = rollback_backup_path(path)
        write_predecessor_db(path, changes, backup=backup)
        report.backup = str(backup)
        report.keys = sorted(changes.kv)
        report.nodes_written = [n["id"] for n in changes.upsert_nodes]
        report.nodes_deleted = list(changes.delete_nodes)
        report.seeds = seeds
        log.warning(
            "%s: brought up to date for a rollback (kv %s, %d node(s) written, %d deleted, "
            "seeds %s); the file as it was is in %s",
            path,
            ", ".join(report.keys) or "-",
            len(report.nodes_written),
            len(report.nodes_deleted),
            ", ".join(seeds) or "-",
            backup,
        )
    with store.transaction(durable=True):
        store.record_import(
            GONKA_DB_KIND,
            str(path.resolve()),
            read_gonka_db(path).checksum,
            {"from": ROLLBACK_ORIGIN, **report.as_dict()},
        )
    return report


__all__ = [
    "GONKA_DB_KIND",
    "GonkaDbReport",
    "GonkaDbRollback",
    "gonka_db_to_import",
    "import_gonka_db",
    "read_gonka_db",
    "roll_back_gonka_db",
]
