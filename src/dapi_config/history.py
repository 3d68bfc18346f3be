"""What the audit trail says the state is (SPEC §10): the newest value the trail holds for each
part of the state, and where the state differs from it (``dapi-config check --deep``).

Every change is an audit row with its new value, in commit order, so the newest row about a
part names what that part must hold now. A value changed under the trail (a page of the
database rewritten, a row edited by hand) differs from it. Restores are followed: the rows a
restore undid do not count (the state went back to the backup's revision, whose rows do). A
part whose newest row the retention deleted is not checked, nor is one the trail only knows
by its digest (a value too large to keep: the digest is compared instead).

The parts: ``node:<id>`` (the node as the audit shows it), ``chain:<key>`` (height, node
version, legacy chain keys), ``schedule``, ``seed:<kind>``, ``params:<kind>``,
``upgrade_plan``, ``key:<node id>`` (a key's version and fingerprint; never a key; without the
master key, the version only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from dapi_config.errors import HistoryUnavailableError
from dapi_config.models import (
    LEGACY,
    LEGACY_NOTES,
    BandwidthParamsCache,
    InferenceNodeConfig,
    NodeVersion,
    PoCParamsCache,
    SeedInfo,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.store import audit_digest
from dapi_config.store.backend import SEED_KINDS
from dapi_config.store.queries import HEIGHT, NODE_VERSION, RESTORE_ACTION

if TYPE_CHECKING:
    from dapi_config.store.backend import StateCore

RESTORE = RESTORE_ACTION


@dataclass(frozen=True)
class TrailRow:
    """One audit row, its values decoded."""

    revision: int
    action: str
    target: str
    old: Any
    new: Any
    chain: str | None = None


@dataclass
class Known:
    """The newest value the trail holds for a part, and the revision that wrote it.
    ``digest``: only the value's SHA-256 is known; ``partial``: only the keys present."""

    value: Any
    revision: int
    digest: str | None = None
    partial: bool = False


@dataclass(frozen=True)
class Difference:
    """A part whose current value is not the one its newest audit row wrote."""

    part: str
    revision: int
    message: str

    def describe(self) -> str:
        return f"{self.part}: {self.message} (newest audit row about it: r{self.revision})"


def effective(rows: list[TrailRow]) -> tuple[list[TrailRow], bool]:
    """``rows`` without those a restore undid (nor the restores undone by a later one), and
    whether the trail still starts where the state did: a restore of another state's backup
    (its newest audit row is not this trail's row of that revision) starts it over, so the
    rows before it do not count."""
    by_revision = {r.revision: r for r in rows}
    undone: list[tuple[int, int]] = []
    start = 0
    for row in reversed(rows):
        if row.action != RESTORE or any(lo <= row.revision <= hi for lo, hi in undone):
            continue
        new = row.new if isinstance(row.new, dict) else {}
        theirs = new.get("backup_chain")
        ours = by_revision.get(int(new.get("backup_revision", 0)))
        if theirs and (ours is None or ours.chain != theirs):
            start = row.revision
            break
        span = new.get("undone")
        if span:
            undone.append((int(span["from"]), int(span["to"])))
    kept = [
        r
        for r in rows
        if r.revision >= start and not any(lo <= r.revision <= hi for lo, hi in undone)
    ]
    return kept, start == 0


def _omitted(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("omitted") is True and "sha256" in value:
        return str(value["sha256"])
    return None


class _Replay:
    """The newest known value of each part, row after row."""

    def __init__(self, *, known_registry: bool) -> None:
        self.known: dict[str, Known] = {}
        #: The ids of every node, while the trail knows them all.
        self.registry: set[str] | None = set() if known_registry else None

    def put(self, part: str, value: Any, revision: int) -> None:
        digest = _omitted(value)
        self.known[part] = Known(None if digest else value, revision, digest)

    def nodes(self, values: Any, revision: int, *, replace: bool) -> None:
        digest = _omitted(values)
        if digest is not None:  # which nodes is not known: they are not checked until changed
            for part in [p for p in self.known if p.startswith(("node:", "key:"))]:
                del self.known[part]
            self.registry = None
            return
        if replace:
            ids = {str(n["id"]) for n in values}
            for part in [p for p in self.known if p.startswith(("node:", "key:"))]:
                if part.split(":", 1)[1] not in ids:
                    self.known[part] = Known(None, revision)
            self.registry = set(ids)
        elif self.registry is not None:
            self.registry |= {str(n["id"]) for n in values}
        for node in values:
            self.put(f"node:{node['id']}", node, revision)

    def apply(self, row: TrailRow) -> None:
        action, target, new, revision = row.action, row.target, row.new, row.revision
        if action in ("add_node", "update_node"):
            if self.registry is not None:
                self.registry.add(target)
            self.put(f"node:{target}", new, revision)
        elif action == "remove_node":
            if self.registry is not None:
                self.registry.discard(target)
            self.known[f"node:{target}"] = Known(None, revision)
            self.known[f"key:{target}"] = Known(None, revision)  # its key goes with it
        elif action in ("enable_node", "disable_node"):
            node = self.known.get(f"node:{target}")
            if node is not None and isinstance(node.value, dict):
                node.value = {**node.value, "is_enabled": new}
                node.revision = revision
            else:
                self.known[f"node:{target}"] = Known({"is_enabled": new}, revision, partial=True)
        elif action in ("add_nodes", "set_nodes"):
            self.nodes(new, revision, replace=action == "set_nodes")
        elif action == "set_height":
            if isinstance(new, dict):
                self.put(f"chain:{HEIGHT}", new[HEIGHT], revision)
                self.put(f"chain:{NODE_VERSION}", new[NODE_VERSION], revision)
                schedule = self.known.get("schedule")
                if schedule is not None and schedule.digest is None:
                    popped = {(e["height"], e["version"]) for e in row.old["node_versions"]}
                    schedule.value = [
                        e for e in schedule.value if (e["height"], e["version"]) not in popped
                    ]
                    schedule.revision = revision
            else:
                self.put(f"chain:{HEIGHT}", new, revision)
        elif action == "set_chain_state":
            self.put(f"chain:{target}", new, revision)
        elif action == "set_node_versions":
            self.put("schedule", new, revision)
        elif action == "add_node_version":
            schedule = self.known.get("schedule")
            if schedule is not None and schedule.digest is None:
                schedule.value = [*schedule.value, new]
                schedule.revision = revision
        elif action == "rotate_seeds":
            for kind, seed in new.items():
                self.put(f"seed:{kind}", seed, revision)
        elif action.startswith("set_") and action.endswith("_seed"):
            self.put(f"seed:{target.removesuffix('_seed')}", new, revision)
        elif action.startswith("set_") and action.endswith("_params"):
            self.put(f"params:{target}", new, revision)
        elif action == "set_upgrade_plan":
            self.put("upgrade_plan", new, revision)
        elif action in ("create_security_key", "rotate_security_key"):
            self.known[f"key:{target}"] = Known(
                {"key_version": new["key_version"], "key": new.get("key")}, revision, partial=True
            )
        elif action == "delete_security_key":
            self.known[f"key:{target}"] = Known(None, revision)


def newest_values(rows: Iterable[TrailRow], *, whole: bool) -> dict[str, Known]:
    """The newest value the trail holds for each part (see the module doc). ``whole``: the
    trail starts with the state (no row was ever cut by the retention), so the registry is
    known from its empty start: a node the trail never added is a difference too."""
    kept, from_start = effective(list(rows))
    replay = _Replay(known_registry=whole and from_start)
    if whole and from_start:
        replay.known["schedule"] = Known([], 0)  # a new state's schedule is empty
    for row in kept:
        replay.apply(row)
    if replay.registry is not None:
        replay.known["nodes"] = Known(sorted(replay.registry), kept[-1].revision if kept else 0)
    return replay.known


def _schedule_key(entries: Any) -> list[tuple[int, str]]:
    return sorted((int(e["height"]), str(e["version"])) for e in entries)


def differences(known: Mapping[str, Known], current: Mapping[str, Any]) -> list[Difference]:
    """Each part of ``current`` (parts as in the module doc; absent: the part does not exist)
    that is not what ``known`` says, newest audit row named."""
    found: list[Difference] = []
    same: dict[str, Callable[[Any, Any], bool]] = {
        "schedule": lambda a, b: _schedule_key(a) == _schedule_key(b),
    }
    registry = known.get("nodes")
    parts = set(known) | {p for p in current if p.startswith(("node:", "key:"))}
    for part in sorted(parts):
        entry = known.get(part)
        if part == "nodes":
            continue
        if entry is None:
            if (
                registry is not None
                and part.startswith("node:")
                and part.split(":", 1)[1] not in registry.value
            ):
                found.append(
                    Difference(part, registry.revision, "exists, but the trail never added it")
                )
            continue
        now = current.get(part)
        if now is None and part.startswith("chain:"):
            now = ""  # a chain key never written reads as empty
        if entry.digest is not None:
            if now is None or audit_digest(now) != entry.digest:
                found.append(Difference(part, entry.revision, "differs from the digest recorded"))
            continue
        if entry.value is None:
            if now is not None:
                found.append(Difference(part, entry.revision, "exists, but the trail removed it"))
            continue
        if now is None:
            found.append(Difference(part, entry.revision, "is missing, but the trail has it"))
            continue
        if entry.partial:
            # What the current value could not say (a key's fingerprint without the master
            # key) is not compared.
            changed = sorted(k for k, v in entry.value.items() if k in now and now[k] != v)
        elif isinstance(entry.value, dict) and isinstance(now, dict):
            changed = sorted(
                k for k in set(entry.value) | set(now) if entry.value.get(k) != now.get(k)
            )
        else:
            equal = same.get(part, lambda a, b: str(a) == str(b))
            changed = [] if equal(entry.value, now) else ["value"]
        if changed:
            shown = "; ".join(_change(k, entry.value, now) for k in changed[:5])
            found.append(Difference(part, entry.revision, f"differs from the trail: {shown}"))
    return found


def _change(key: str, was: Any, now: Any) -> str:
    if key == "value":
        return f"{_short(was)} in the trail, {_short(now)} now"
    return f"{key} {_short(was.get(key))} in the trail, {_short(now.get(key))} now"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- the state at a revision, rebuilt ---------------------------------------------------------

_PARAMS_MODELS: dict[str, Any] = {
    "validation": ValidationParamsCache,
    "bandwidth": BandwidthParamsCache,
    "poc": PoCParamsCache,
}
#: Actions whose rows carry a value the rebuilt state needs.
_REPLAYED = frozenset(
    {
        "add_node",
        "update_node",
        "remove_node",
        "enable_node",
        "disable_node",
        "add_nodes",
        "set_nodes",
        "set_height",
        "set_chain_state",
        "set_node_versions",
        "add_node_version",
        "rotate_seeds",
        "set_upgrade_plan",
    }
)


def timeline(rows: list[TrailRow], revision: int) -> tuple[list[TrailRow], bool]:
    """The rows that made the state at ``revision`` (see :func:`effective`), and whether they
    start where the state did."""
    return effective([r for r in rows if r.revision <= revision])


def replayed(row: TrailRow) -> bool:
    """Whether ``row`` changes a part of the state a rebuild writes."""
    action = row.action
    return action in _REPLAYED or (
        action.startswith("set_") and action.endswith(("_seed", "_params"))
    )


def too_large(row: TrailRow) -> bool:
    """Whether the trail keeps only the digest of the value ``row`` wrote."""
    return replayed(row) and _omitted(row.new) is not None


class _Rebuild:
    """Rows written into a private state, as the live store wrote their values. Node auth
    tokens are never in the trail: a node keeps the sealed token it has in the state being
    rebuilt, else the one it has now (``tokens``)."""

    def __init__(self, store: StateCore, tokens: Callable[[str], SecretStr | None]) -> None:
        self.store = store
        self.tokens = tokens

    def node(
        self, data: dict[str, Any], rebuilt: InferenceNodeConfig | None = None
    ) -> InferenceNodeConfig:
        """The node ``data`` (a row's value) with its sealed token: the one the node has in
        the state being rebuilt (``rebuilt``, else read), else the one it has now."""
        values = {k: v for k, v in data.items() if k != "auth_token"}
        node = InferenceNodeConfig.model_validate(values, context={LEGACY: True, LEGACY_NOTES: []})
        if data.get("auth_token"):
            rebuilt = rebuilt or _find(self.store, node.id)
            token = None if rebuilt is None else rebuilt.auth_token
            node.auth_token = token if token is not None else self.tokens(node.id)
        return node

    def put_node(self, data: dict[str, Any]) -> None:
        rebuilt = _find(self.store, str(data["id"]))
        node = self.node(data, rebuilt)
        if rebuilt is not None:
            self.store.update_node(node, old=rebuilt)
        else:
            self.store.add_node(node)

    def apply(self, row: TrailRow) -> None:
        store, action, target, new = self.store, row.action, row.target, row.new
        if action in ("add_node", "update_node"):
            self.put_node(new)
        elif action == "add_nodes":
            for data in new:
                self.put_node(data)
        elif action == "set_nodes":
            store.replace_nodes([self.node(data) for data in new])
        elif action == "remove_node":
            if _find(store, target) is not None:
                store.remove_node(target)
        elif action in ("enable_node", "disable_node"):
            if _find(store, target) is not None:
                store.set_node_enabled(target, bool(new))
        elif action == "set_height":
            if isinstance(new, dict):
                store.set_chain_value(HEIGHT, str(new[HEIGHT]))
                store.set_chain_value(NODE_VERSION, str(new[NODE_VERSION]))
                popped = {(e["height"], e["version"]) for e in row.old["node_versions"]}
                store.replace_node_versions(
                    [v for v in store.node_versions() if (v.height, v.version) not in popped]
                )
            else:
                store.set_chain_value(HEIGHT, str(new))
        elif action == "set_chain_state":
            store.set_chain_value(target, str(new))
        elif action == "set_node_versions":
            store.replace_node_versions([NodeVersion.model_validate(v) for v in new])
        elif action == "add_node_version":
            store.add_node_version(NodeVersion.model_validate(new))
        elif action == "rotate_seeds":
            for kind in SEED_KINDS:
                store.set_seed(kind, SeedInfo.model_validate(new[kind]))
        elif action.startswith("set_") and action.endswith("_seed"):
            kind = next(k for k in SEED_KINDS if target == f"{k}_seed")
            store.set_seed(kind, SeedInfo.model_validate(new))
        elif action.startswith("set_") and action.endswith("_params"):
            store.set_params(target, _PARAMS_MODELS[target].model_validate(new))
        elif action == "set_upgrade_plan":
            store.set_upgrade_plan(UpgradePlan.model_validate(new))


def _find(store: StateCore, node_id: str) -> InferenceNodeConfig | None:
    try:
        return store.node(node_id)
    except KeyError:  # NodeNotFoundError
        return None


def replay(
    store: StateCore,
    rows: Iterable[TrailRow],
    *,
    tokens: Callable[[str], SecretStr | None],
) -> None:
    """Write what ``rows`` changed into ``store`` (a private state being rebuilt), in order,
    in one transaction. Raises :class:`HistoryUnavailableError` at a value the trail keeps
    only as a digest."""
    rebuild = _Rebuild(store, tokens)
    with store.transaction():
        for row in rows:
            if not replayed(row):
                continue
            if too_large(row):
                raise HistoryUnavailableError(
                    f"r{row.revision} ({row.action} {row.target}): its value was too large for "
                    "the trail, which keeps only its digest, and no backup was taken between it "
                    "and the revision asked for"
                )
            rebuild.apply(row)
