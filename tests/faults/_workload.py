"""The mixed write workload of the kill -9 campaign, and the model that checks its result.

The writer and the checker build the SAME sequence of operations from a seed, so the checker
knows exactly which change each acknowledgement stands for. After a kill, the state on disk
must equal the model after the acknowledged operations, or after one more (the kill can land
between a commit and its acknowledgement) -- nothing else.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dapi_config import (
    ConfigManager,
    InferenceNodeConfig,
    NodeVersion,
    SeedInfo,
    ValidationParamsCache,
)

Op = tuple[Any, ...]


def node(node_id: str, port: int = 5000) -> InferenceNodeConfig:
    return InferenceNodeConfig(
        id=node_id,
        host="10.0.0.1",
        inference_port=port,
        poc_port=8080,
        max_concurrent=4,
        models={"Qwen/Qwen2.5-7B-Instruct": {"args": ["--tp", "1"]}},
    )


def operations(seed: int, round_no: int, start_height: int) -> Iterator[Op]:
    """An endless, reproducible mix: heights, versions, seeds, nodes, params, batches."""
    rng = random.Random(seed)
    height = start_height
    i = 0
    while True:
        i += 1
        kind = rng.random()
        tag = f"r{round_no}-{i}"
        if kind < 0.35:
            height += rng.randint(1, 3)
            yield ("height", height)
        elif kind < 0.45:
            yield ("version", height + rng.randint(1, 6), f"v{tag}")
        elif kind < 0.55:
            yield ("seed", rng.randint(1, 2**40), i)
        elif kind < 0.60:
            yield ("rotate",)
        elif kind < 0.72:
            yield ("add", tag)
        elif kind < 0.77:
            yield ("remove", rng.random())
        elif kind < 0.82:
            yield ("enable", rng.random(), rng.random() < 0.5)
        elif kind < 0.87:
            yield ("params", rng.randint(1, 10_000))
        elif kind < 0.98:
            height += 1
            yield ("batch", height, tag, rng.randint(1, 2**40), i)
        else:
            yield ("replace", tag, rng.randint(0, 3))


def _pick(ids: list[str], fraction: float) -> str | None:
    return ids[int(fraction * len(ids))] if ids else None


def apply(cm: ConfigManager, op: Op) -> None:
    """Run one operation through the public API (one transaction, or one batch)."""
    kind = op[0]
    if kind == "height":
        cm.set_height(op[1])
    elif kind == "version":
        cm.add_node_version(op[1], op[2])
    elif kind == "seed":
        cm.set_upcoming_seed(SeedInfo(seed=op[1], epoch_index=op[2], signature=f"s{op[2]}"))
    elif kind == "rotate":
        cm.rotate_seeds()
    elif kind == "add":
        cm.add_node(node(op[1]))
    elif kind == "remove":
        victim = _pick([n.id for n in cm.get_nodes()], op[1])
        if victim is not None:
            cm.remove_node(victim)
    elif kind == "enable":
        target = _pick([n.id for n in cm.get_nodes()], op[1])
        if target is not None:
            cm.set_node_enabled(target, op[2])
    elif kind == "params":
        cm.set_validation_params(
            ValidationParamsCache(
                timestamp_expiration=op[1], timestamp_advance=op[1] + 1, expiration_blocks=op[1]
            )
        )
    elif kind == "batch":
        with cm.transaction():
            cm.set_height(op[1])
            cm.add_node(node(f"{op[2]}-b"))
            cm.set_upcoming_seed(SeedInfo(seed=op[3], epoch_index=op[4], signature="b"))
            cm.rotate_seeds()
    elif kind == "replace":
        cm.set_nodes([node(f"{op[1]}-{k}") for k in range(op[2])])
    else:
        raise ValueError(op)


@dataclass
class Model:
    """The expected state, as plain data."""

    height: int = 0
    version: str = ""
    schedule: list[tuple[int, str]] = field(default_factory=list)
    seeds: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    nodes: dict[str, bool] = field(default_factory=dict)  # insertion-ordered: id -> enabled
    params: int | None = None

    def copy(self) -> Model:
        return Model(
            self.height,
            self.version,
            list(self.schedule),
            dict(self.seeds),
            dict(self.nodes),
            self.params,
        )

    def _set_height(self, h: int) -> None:
        self.height = h
        due = [v for v in self.schedule if v[0] <= h]
        if due:
            # As Go's PopIf: the greatest due height; of several there, the first scheduled.
            top = max(height for height, _ in due)
            self.version = next(version for height, version in due if height == top)
            self.schedule = [v for v in self.schedule if v[0] > h]

    def _rotate(self) -> None:
        zero = (0, 0, "")
        self.seeds = {
            "previous": self.seeds.get("current", zero),
            "current": self.seeds.get("upcoming", zero),
            "upcoming": zero,
        }

    def apply(self, op: Op) -> None:
        kind = op[0]
        ids = list(self.nodes)
        if kind == "height":
            self._set_height(op[1])
        elif kind == "version":
            if (op[1], op[2]) not in self.schedule:
                self.schedule.append((op[1], op[2]))
                self.schedule.sort(key=lambda v: v[0])  # stable: insertion order per height
        elif kind == "seed":
            self.seeds["upcoming"] = (op[1], op[2], f"s{op[2]}")
        elif kind == "rotate":
            self._rotate()
        elif kind == "add":
            self.nodes[op[1]] = True
        elif kind == "remove":
            victim = _pick(ids, op[1])
            if victim is not None:
                del self.nodes[victim]
        elif kind == "enable":
            target = _pick(ids, op[1])
            if target is not None:
                self.nodes[target] = op[2]
        elif kind == "params":
            self.params = op[1]
        elif kind == "batch":
            self._set_height(op[1])
            self.nodes[f"{op[2]}-b"] = True
            self.seeds["upcoming"] = (op[3], op[4], "b")
            self._rotate()
        elif kind == "replace":
            self.nodes = {f"{op[1]}-{k}": True for k in range(op[2])}


def read_state(cm: ConfigManager) -> Model:
    """The state on disk, in the model's terms."""
    zero = (0, 0, "")

    def seed(s: SeedInfo) -> tuple[int, int, str]:
        return (s.seed, s.epoch_index, s.signature) if s.seed or s.signature else zero

    schedule: list[NodeVersion] = cm.get_node_versions()
    params = cm.get_validation_params()
    return Model(
        height=cm.get_height(),
        version=cm.get_current_node_version(),
        schedule=[(v.height, v.version) for v in schedule],
        seeds={
            "previous": seed(cm.get_previous_seed()),
            "current": seed(cm.get_current_seed()),
            "upcoming": seed(cm.get_upcoming_seed()),
        },
        nodes={n.id: n.is_enabled for n in cm.get_nodes()},
        params=params.timestamp_expiration or None,
    )


def normalise(model: Model) -> Model:
    zero = (0, 0, "")
    out = model.copy()
    out.seeds = {k: out.seeds.get(k, zero) for k in ("previous", "current", "upcoming")}
    return out
