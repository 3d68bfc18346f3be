"""The variants: the new store, the legacy rewrite, the SQLite floor, the fsync limit, reads."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._harness import Variant
from benchmarks.legacy import LegacyConfigFile
from dapi_config import (
    BandwidthParamsCache,
    ConfigManager,
    Hardware,
    InferenceNodeConfig,
    ModelConfig,
    SeedInfo,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.store import sqlite as store_sqlite
from dapi_config.store.connection import Database, Durability

STATIC_CONFIG = """\
api:
  port: 8080
  poc_callback_url: http://10.0.0.1:9100
  ml_grpc_callback_address: 10.0.0.1:9300
  public_url: http://10.0.0.1:9000
  public_server_port: 9000
  ml_server_port: 9100
  admin_server_port: 9200
  ml_grpc_server_port: 9300
chain_node:
  url: http://10.0.0.2:26657
  seed_api_url: http://10.0.0.3:8000
  account_public_key: AqT8yc3D0Ydi9Xe6kv1ljU0Hn4iAbt4lK8UyWlOdqFqR
  signer_key_name: operator
  keyring_backend: file
  keyring_dir: /root/.inference
ml_node_key_config:
  worker_public: 0cQ7m9xr0aFb5ZgA2oZK1cBOn8mC3nqQJH1qAnwV6bM=
  worker_private: ""
nats:
  host: 10.0.0.4
  port: 4222
"""

# The same table and UPSERT the store uses for the height (schema step 1, _put_chain_value).
FLOOR_TABLE = (
    "CREATE TABLE IF NOT EXISTS chain_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
    "updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
)
# The audit log of schema step 1 (AUTOINCREMENT: revisions never reused), for the floor that
# also records the change: what the audit trail itself costs SQLite per commit.
AUDIT_TABLE = (
    "CREATE TABLE IF NOT EXISTS audit_log (revision INTEGER PRIMARY KEY AUTOINCREMENT, "
    "at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, "
    "old_value TEXT, new_value TEXT)"
)
AUDIT_INSERT = (
    "INSERT INTO audit_log(at, actor, action, target, old_value, new_value) "
    "VALUES (?, 'library', 'set_height', 'current_height', ?, ?)"
)
FLOOR_UPSERT = (
    "INSERT INTO chain_state(key, value, updated_at) VALUES (?, ?, CURRENT_TIMESTAMP) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


def make_node(i: int, tag: str = "node") -> InferenceNodeConfig:
    """A realistic inference node (one model with arguments, one hardware line)."""
    return InferenceNodeConfig(
        id=f"{tag}-{i:06d}",
        host=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
        inference_segment="/v1",
        inference_port=5000,
        poc_segment="/api/v1",
        poc_port=8080,
        models={
            "Qwen/Qwen2.5-7B-Instruct": ModelConfig(
                args=["--quantization", "fp8", "--gpu-memory-utilization", "0.9"]
            )
        },
        max_concurrent=500,
        hardware=[Hardware(type="NVIDIA H100 80GB", count=8)],
        version="v3.0.8",
        is_enabled=True,
    )


def populate(cm: ConfigManager, nodes: int) -> None:
    """Every kind of dynamic state a running node has, plus ``nodes`` registered nodes."""
    cm.set_nodes([make_node(i) for i in range(nodes)])
    cm.set_height(1_000)
    # One scheduled version far ahead: set_height really looks up the schedule, pops nothing.
    cm.add_node_version(10**12, "v-far-future")
    cm.set_current_seed(SeedInfo(seed=1234567, epoch_index=41, signature="ab" * 32))
    cm.set_upcoming_seed(SeedInfo(seed=7654321, epoch_index=42, signature="cd" * 32))
    cm.set_validation_params(
        ValidationParamsCache(timestamp_expiration=60, timestamp_advance=30, expiration_blocks=20)
    )
    cm.set_bandwidth_params(
        BandwidthParamsCache(
            estimated_limits_per_block_kb=1024, kb_per_input_token=0.5, kb_per_output_token=1.5
        )
    )
    cm.set_upgrade_plan(
        UpgradePlan(
            name="v3.1.0",
            height=2_000_000,
            binaries={"linux/amd64": "https://example.invalid/dapi-v3.1.0-linux-amd64"},
            node_version="v3.1.0",
        )
    )


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@dataclass
class SizeSetup:
    """Everything measured at one registry size."""

    nodes: int
    stores: dict[str, ConfigManager]
    legacy: dict[str, LegacyConfigFile]


class Bench:
    """Builds the files under ``root`` and hands out the variants."""

    def __init__(self, root: Path, sizes: list[int], legacy_nodes_max: int | None = None) -> None:
        self.root = root
        self.sizes = sizes
        #: Largest registry at which the legacy add/remove pair and the marshal-only variant are
        #: timed (each costs as much as the legacy set_height: a whole-file rewrite, seconds at
        #: 10,000 nodes); None = every size.
        self.legacy_nodes_max = legacy_nodes_max
        self._stack = contextlib.ExitStack()
        self._heights = itertools.count(10_000)
        self._extra = itertools.count(1)
        self.setups: dict[int, SizeSetup] = {}
        self.config = root / "config.yaml"
        self.config.write_text(STATIC_CONFIG)
        self.config.chmod(0o600)

    def close(self) -> None:
        self._stack.close()

    def _open(self, state: Path, durability: Durability) -> ConfigManager:
        cm = ConfigManager.open(self.config, state, durability=durability, env={})
        self._stack.callback(cm.close)
        return cm

    def build(self) -> None:
        for n in self.sizes:
            folder = self.root / f"n{n}"
            folder.mkdir()
            stores = {}
            for durability in ("full", "normal"):
                cm = self._open(folder / f"state-{durability}.db", durability)
                populate(cm, n)
                stores[durability] = cm
            document = stores["full"].export_full_config(include_secrets=True)
            legacy = {
                "truncate": LegacyConfigFile(
                    folder / "config-truncate.yaml", document, durable=False
                ),
                "durable": LegacyConfigFile(folder / "config-durable.yaml", document, durable=True),
            }
            self.setups[n] = SizeSetup(n, stores, legacy)
        self._open_floor()

    # --- write variants --------------------------------------------------------------------

    def _store_set_height(self, n: int, durability: str) -> Variant:
        cm = self.setups[n].stores[durability]
        label = f"store.{durability}.set_height@{n}"

        def op(k: int) -> dict[str, float]:
            heights = [next(self._heights) for _ in range(k)]
            start = time.perf_counter()
            for h in heights:
                cm.set_height(h)
            return {label: time.perf_counter() - start}

        return Variant(label, op)

    def _store_add_remove(self, n: int, durability: str) -> Variant:
        cm = self.setups[n].stores[durability]
        add, remove = f"store.{durability}.add_node@{n}", f"store.{durability}.remove_node@{n}"

        def op(k: int) -> dict[str, float]:
            spent = {add: 0.0, remove: 0.0}
            for _ in range(k):
                node = make_node(next(self._extra), tag="extra")
                spent[add] += _timed(cm.add_node, node)
                spent[remove] += _timed(cm.remove_node, node.id)
            return spent

        return Variant(f"store.{durability}.add_remove@{n}", op)

    def _legacy_set_height(self, n: int, kind: str) -> Variant:
        legacy = self.setups[n].legacy[kind]
        label = f"legacy.{kind}.set_height@{n}"

        def op(k: int) -> dict[str, float]:
            heights = [next(self._heights) for _ in range(k)]
            start = time.perf_counter()
            for h in heights:
                legacy.set_height(h)
            return {label: time.perf_counter() - start}

        return Variant(label, op)

    def _legacy_add_remove(self, n: int, kind: str) -> Variant:
        legacy = self.setups[n].legacy[kind]
        add, remove = f"legacy.{kind}.add_node@{n}", f"legacy.{kind}.remove_node@{n}"

        def op(k: int) -> dict[str, float]:
            spent = {add: 0.0, remove: 0.0}
            for _ in range(k):
                node = make_node(next(self._extra), tag="extra").model_dump(mode="json")
                spent[add] += _timed(legacy.add_node, node)
                spent[remove] += _timed(legacy.remove_node, node["id"])
            return spent

        return Variant(f"legacy.{kind}.add_remove@{n}", op)

    def _legacy_marshal(self, n: int) -> list[Variant]:
        legacy = self.setups[n].legacy["truncate"]
        out = []
        for label, fn in (
            (f"legacy.marshal@{n}", legacy.marshal_only),
            (f"legacy.marshal_pyyaml@{n}", legacy.marshal_pyyaml_only),
        ):

            def op(k: int, label: str = label, fn: Any = fn) -> dict[str, float]:
                start = time.perf_counter()
                for _ in range(k):
                    fn()
                return {label: time.perf_counter() - start}

            out.append(Variant(label, op))
        return out

    def _legacy_io_only(self, n: int, kind: str) -> Variant:
        legacy = self.setups[n].legacy[kind]
        data = legacy.marshal_only()
        label = f"legacy.{kind}.io_only@{n}"

        def op(k: int) -> dict[str, float]:
            start = time.perf_counter()
            for _ in range(k):
                legacy.write_only(data)
            return {label: time.perf_counter() - start}

        return Variant(label, op)

    def write_variants(self) -> list[Variant]:
        out = []
        for n in self.sizes:
            for durability in ("full", "normal"):
                out.append(self._store_set_height(n, durability))
                out.append(self._store_add_remove(n, durability))
            for kind in ("truncate", "durable"):
                out.append(self._legacy_set_height(n, kind))
                if self.legacy_nodes_max is None or n <= self.legacy_nodes_max:
                    out.append(self._legacy_add_remove(n, kind))
                out.append(self._legacy_io_only(n, kind))
            if self.legacy_nodes_max is None or n <= self.legacy_nodes_max:
                out.extend(self._legacy_marshal(n))
        out.extend(self.floor_variants())
        out.append(self.fsync_variant())
        out.extend(self.paired_variants())
        return out

    # --- the floor and the physical limit --------------------------------------------------

    def _open_floor(self) -> None:
        """Bare UPSERT + COMMIT through the project's own Database (its pragmas, its WAL)."""
        self._floor: dict[str, Any] = {}
        for durability in ("full", "normal"):
            db = Database(self.root / f"floor-{durability}.db", durability=durability)
            db.prepare_files()
            self._stack.callback(db.close)
            conn = db.connection()
            conn.execute(FLOOR_TABLE)
            conn.execute(AUDIT_TABLE)
            self._floor[durability] = conn
        # Overwrite 4 KiB in place and fsync it: what one durable commit cannot beat.
        fd = os.open(self.root / "fsync.bin", os.O_RDWR | os.O_CREAT, 0o600)
        self._stack.callback(os.close, fd)
        self._fsync_fd = fd
        self._block = os.urandom(4096)
        os.pwrite(fd, self._block, 0)
        os.fsync(fd)

    def floor_commit(self, durability: str) -> None:
        conn = self._floor[durability]
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(FLOOR_UPSERT, ("current_height", str(next(self._heights))))
        conn.execute("COMMIT")

    def floor_audit_commit(self, durability: str) -> None:
        """The floor plus the audit row set_height writes: UPSERT + INSERT + COMMIT."""
        conn = self._floor[durability]
        height = str(next(self._heights))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(FLOOR_UPSERT, ("current_height", height))
        conn.execute(AUDIT_INSERT, ("2026-01-01T00:00:00.000000+00:00", height, height))
        conn.execute("COMMIT")

    def fsync4k(self) -> None:
        os.pwrite(self._fsync_fd, self._block, 0)
        os.fsync(self._fsync_fd)

    def floor_variants(self) -> list[Variant]:
        out = []
        for durability in ("full", "normal"):
            label = f"floor.{durability}"

            def op(k: int, label: str = label, durability: str = durability) -> dict[str, float]:
                start = time.perf_counter()
                for _ in range(k):
                    self.floor_commit(durability)
                return {label: time.perf_counter() - start}

            out.append(Variant(label, op))
        return out

    def fsync_variant(self) -> Variant:
        def op(k: int) -> dict[str, float]:
            start = time.perf_counter()
            for _ in range(k):
                self.fsync4k()
            return {"fsync4k": time.perf_counter() - start}

        return Variant("fsync4k", op)

    # --- paired variants: alternate single operations so both see the same moment ----------

    def paired_variants(self) -> list[Variant]:
        """Ratios that must be tight: each op of A is immediately followed by one of B."""
        out = []
        for n in self.sizes:
            for durability in ("full", "normal"):
                cm = self.setups[n].stores[durability]
                steps: dict[str, Any] = {
                    f"pair.{durability}.store@{n}": lambda cm=cm: cm.set_height(
                        next(self._heights)
                    ),
                    f"pair.{durability}.floor@{n}": lambda d=durability: self.floor_commit(d),
                    f"pair.{durability}.floor_audit@{n}": (
                        lambda d=durability: self.floor_audit_commit(d)
                    ),
                }
                if durability == "full":
                    steps[f"pair.full.fsync@{n}"] = self.fsync4k
                pair = _alternating(f"pair.{durability}@{n}", steps)
                pair.weight = 5.0 if durability == "full" else 1.0
                out.append(pair)
        for durability in ("full", "normal"):
            steps = {
                f"scale.{durability}.set_height@{n}": (
                    lambda cm=self.setups[n].stores[durability]: cm.set_height(next(self._heights))
                )
                for n in self.sizes
            }
            scale = _alternating(f"scale.{durability}.set_height", steps)
            scale_nodes = self._scale_add_remove(durability)
            scale.weight = scale_nodes.weight = 3.0 if durability == "full" else 1.0
            out += [scale, scale_nodes]
        return out

    def _scale_add_remove(self, durability: str) -> Variant:
        def op(k: int) -> dict[str, float]:
            spent: dict[str, float] = {}
            for i in range(k):
                for n in self.sizes if i % 2 == 0 else self.sizes[::-1]:
                    cm = self.setups[n].stores[durability]
                    node = make_node(next(self._extra), tag="extra")
                    add = f"scale.{durability}.add_node@{n}"
                    remove = f"scale.{durability}.remove_node@{n}"
                    spent[add] = spent.get(add, 0.0) + _timed(cm.add_node, node)
                    spent[remove] = spent.get(remove, 0.0) + _timed(cm.remove_node, node.id)
            return spent

        return Variant(f"scale.{durability}.add_remove", op)

    # --- reads -----------------------------------------------------------------------------

    def read_variants(self, n: int) -> list[Variant]:
        cm = self.setups[n].stores["full"]
        state = cm.state_path
        with _data_version_only():
            fallback = self._open(state, "full")
        other = self._open(state, "full")
        out = []

        def loop(label: str, fn: Any) -> Variant:
            # Wall time, and this thread's CPU time: on a shared machine a sub-microsecond read
            # is often descheduled mid-sample, which the CPU time does not count.
            def op(k: int) -> dict[str, float]:
                cpu = time.thread_time()
                start = time.perf_counter()
                for _ in range(k):
                    fn()
                wall = time.perf_counter() - start
                return {label: wall, f"{label}.cpu": time.thread_time() - cpu}

            return Variant(label, op)

        out.append(loop("read.get_height", cm.get_height))
        out.append(loop("read.get_height.data_version", fallback.get_height))
        out.append(loop(f"read.get_nodes@{n}", cm.get_nodes))
        out.append(loop(f"read.get_node@{n}", lambda: cm.get_node("node-000007")))

        def after_commit(k: int) -> dict[str, float]:
            spent = 0.0
            for _ in range(k):
                other.set_height(next(self._heights))
                spent += _timed(cm.get_height)
            return {"read.get_height.after_commit": spent}

        out.append(Variant("read.get_height.after_commit", after_commit))
        assert cm.backend.hot_check == "wal-index", cm.backend.hot_check
        assert fallback.backend.hot_check == "data_version"
        return out


def _alternating(name: str, steps: dict[str, Any]) -> Variant:
    """Run each step once per iteration, in turn, timing each under its own label."""

    def op(k: int) -> dict[str, float]:
        spent = dict.fromkeys(steps, 0.0)
        forward = list(steps.items())
        backward = forward[::-1]
        for i in range(k):
            # Reverse the order every other time: no step always follows the same one.
            for label, step in forward if i % 2 == 0 else backward:
                spent[label] += _timed(step)
        return spent

    return Variant(name, op)


@contextlib.contextmanager
def _data_version_only() -> Iterator[None]:
    """Open a store that checks with PRAGMA data_version (the pre-optimisation hot path)."""
    saved = store_sqlite.open_wal_index
    store_sqlite.open_wal_index = lambda *_: None  # type: ignore[assignment]
    try:
        yield
    finally:
        store_sqlite.open_wal_index = saved
