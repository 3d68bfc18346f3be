"""``API_STATE_MODE=yaml``: the state lives in the predecessor's single YAML file, no database.

The config file itself becomes the single legacy-layout file the old binary used: its static
part stays as the operator wrote it (comments included), and the dynamic keys follow in the
Go writer's layout. Every committed change rewrites the file atomically (temp file, fsync,
rename, fsync of the directory), so a crash leaves the old or the new file, never a truncated
one. Writers in several processes queue on an ``flock`` of ``.<config>.lock``; readers never
lock (a rename is atomic) and re-read the file when its inode, size or mtime changed.

Switching to this mode from ``db``/``dual``: when the file holds no dynamic keys yet and a
state database exists, the database's values are written into the file at open, so nothing is
lost. Switching back is the ordinary legacy migration.

Not available here (no database): audit history (``latest_revision`` is always 0), named
secrets other than the worker key, one-time imports other than the node file.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, SecretStr

from dapi_config._files import atomic_write, file_lock, file_owner
from dapi_config._goyaml import render_go_yaml
from dapi_config._validation import with_admin_state_of
from dapi_config._yaml import YamlDocument, load_document
from dapi_config.crypto import (
    WORKER_KEY_SECRET,
    KeyParams,
    MasterKeySource,
    SecretBox,
    is_sealed,
)
from dapi_config.errors import (
    BackupError,
    DuplicateNodeError,
    MasterKeyError,
    NodeNotFoundError,
    StateUnavailableError,
)
from dapi_config.legacy.layout import legacy_node, trim_unset_later_fields, with_models_as_names
from dapi_config.legacy.parse import (
    MERGED_FLAG_ORIGIN,
    YAML_MODE_MARKER,
    dynamic_keys_in,
    parse_legacy_state,
    without_marker,
)
from dapi_config.legacy.text import static_text
from dapi_config.models import (
    PARAMS_MODELS,
    InferenceNodeConfig,
    NodeVersion,
    SeedInfo,
    UpgradePlan,
)
from dapi_config.schedule import due_winner, from_go_stack, go_stack_order
from dapi_config.store.backend import (
    SEED_KINDS,
    Sealer,
    SeedKind,
)
from dapi_config.store.backup import BackupInfo
from dapi_config.store.connection import register_hook
from dapi_config.store.sqlite import HEIGHT, NODE_VERSION, SqliteStore, current_actor

log = logging.getLogger("dapi_config.state")

ParamsT = TypeVar("ParamsT", bound=BaseModel)
KEY_SECTION = "ml_node_key_config"


@dataclass
class _Doc:
    """The dynamic part of the file, validated."""

    chain: dict[str, str] = field(default_factory=dict)
    seeds: dict[SeedKind, SeedInfo] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan: UpgradePlan = field(default_factory=UpgradePlan)
    versions: list[NodeVersion] = field(default_factory=list)
    nodes: list[InferenceNodeConfig] = field(default_factory=list)
    merged: bool = False
    #: The file's ml_node_key_config (plain) and whether we write it (we own the worker key).
    keys: dict[str, Any] = field(default_factory=dict)
    owns_keys: bool = False


class YamlStore:
    """The :class:`~dapi_config.store.backend.StateBackend` of ``yaml`` mode."""

    def __init__(
        self,
        file: Path,
        *,
        default_actor: str = "library",
        parsed: tuple[bytes, YamlDocument | None] | None = None,
    ) -> None:
        self.file = file
        self.default_actor = default_actor
        self._lock_path = file.with_name(f".{file.name}.lock")
        self._thread_lock = threading.RLock()
        self._local = threading.local()
        self._state = _Doc()
        self._static = ""
        self._signature: tuple[int, int, int] | None = None
        self._closed = False
        self._has_dynamic = False
        self._models_as_names = False
        self._commit_hooks: list[Callable[[], None]] = []
        self._observers: list[Callable[[float, bool], None]] = []
        self._refresh(parsed)

    @classmethod
    def open(
        cls,
        config_path: Path,
        *,
        state_path: Path | None = None,
        default_actor: str = "library",
        keys: MasterKeySource | None = None,
        parsed: tuple[bytes, YamlDocument | None] | None = None,
        read_only: bool = False,
    ) -> YamlStore:
        """Open the config file as the state; seed it from ``state_path`` (a state database
        left by ``db``/``dual`` mode) when the file holds no dynamic state yet; ``keys``
        decrypts the worker key stored there (the old binary needs it in clear).

        Raises :class:`ConfigError` for malformed legacy values in the file,
        :class:`StateUnavailableError` when it cannot be written.
        """
        store = cls(Path(config_path), default_actor=default_actor, parsed=parsed)
        seed = not read_only and state_path is not None and Path(state_path).exists()
        if seed and state_path is not None and not store._has_dynamic:
            store._seed_from_database(Path(state_path), keys)
        return store

    # --- file I/O ------------------------------------------------------------------------

    def _stat_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.file)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _refresh(self, preloaded: tuple[bytes, YamlDocument | None] | None = None) -> None:
        """Re-read the file if another process replaced it since we last looked (``preloaded``:
        its bytes and parsed document as already read, reused when the bytes still match)."""

        signature = self._stat_signature()
        if signature == self._signature and signature is not None:
            return
        with self._thread_lock:
            try:
                raw = self.file.read_bytes()
            except OSError as exc:
                raise StateUnavailableError(
                    f"{self.file}: cannot read the state file: {exc.strerror}"
                ) from None
            source = str(self.file)
            if preloaded is not None and preloaded[0] == raw and preloaded[1] is not None:
                document = preloaded[1]
            else:
                document = load_document(raw, source)
            plain: dict[str, Any] = document.data if isinstance(document.data, dict) else {}
            dynamic = dynamic_keys_in(plain)
            parsed = parse_legacy_state(plain, source)
            state = _Doc()
            for key in (
                "current_height",
                "last_processed_height",
                "current_node_version",
                "last_used_version",
            ):
                value = getattr(parsed, key)
                if value is not None:
                    state.chain[key] = str(value)
            state.seeds = dict(parsed.seeds)
            if parsed.validation_params is not None:
                state.params["validation"] = parsed.validation_params.model_dump(mode="json")
            if parsed.bandwidth_params is not None:
                state.params["bandwidth"] = parsed.bandwidth_params.model_dump(mode="json")
            if parsed.poc_params is not None:
                state.params["poc"] = parsed.poc_params.model_dump(mode="json")
            state.plan = parsed.upgrade_plan or UpgradePlan()
            state.versions = from_go_stack(parsed.node_versions or [])
            state.nodes = list(parsed.nodes or [])
            state.merged = bool(parsed.merged_node_config)
            keys = plain.get(KEY_SECTION)
            state.keys = dict(keys) if isinstance(keys, dict) else {}
            self._has_dynamic = bool(dynamic)
            self._models_as_names = parsed.models_as_names
            if isinstance(document.data, dict):
                self._static = without_marker(static_text(document, set(dynamic)))
            else:
                self._static = raw.decode("utf-8")
            self._state = state
            self._signature = self._stat_signature()

    def _render(self, state: _Doc) -> str:

        dynamic: dict[str, Any] = {
            "current_height": int(state.chain.get(HEIGHT, "0")),
            "current_node_version": state.chain.get(NODE_VERSION, ""),
            # The file is the predecessor's own: a node's auth_token is in clear there, as the
            # old binary needs it.
            "nodes": [self._node_layout(n) for n in state.nodes],
            "merged_node_config": state.merged,
            "node_versions": {
                "versions": [v.model_dump(mode="json") for v in go_stack_order(state.versions)]
            },
            "upgrade_plan": state.plan.model_dump(mode="json"),
            "validation_params": state.params.get("validation", _defaults("validation")),
            "bandwidth_params": state.params.get("bandwidth", _defaults("bandwidth")),
            "poc_params": state.params.get("poc", _defaults("poc")),
        }
        trim_unset_later_fields(dynamic)
        for kind in SEED_KINDS:
            dynamic[f"{kind}_seed"] = state.seeds.get(kind, SeedInfo()).model_dump(mode="json")
        for key in ("last_processed_height", "last_used_version"):
            if key in state.chain:
                value = state.chain[key]
                dynamic[key] = int(value) if key == "last_processed_height" else value
        static = self._static
        if state.owns_keys:
            dynamic[KEY_SECTION] = state.keys
            document = load_document(static, str(self.file))
            if isinstance(document.data, dict) and KEY_SECTION in document.data:
                static = static_text(document, {KEY_SECTION})
        if static and not static.endswith("\n"):
            static += "\n"
        return static + YAML_MODE_MARKER + "\n" + render_go_yaml(dynamic)

    def _node_layout(self, node: InferenceNodeConfig) -> dict[str, Any]:
        data = legacy_node(node, reveal_secrets=True)
        # Kept in the shape the file had: binaries before 2025-03 read only plain names.
        return with_models_as_names(data) if self._models_as_names else data

    def _write(self, state: _Doc) -> None:
        text = self._render(state)
        try:
            st = self.file.stat()
            # 0600 at most (SPEC §11): the file holds the worker key, as the legacy file did.
            atomic_write(self.file, text, mode=st.st_mode & 0o600, owner=file_owner(st))
        except OSError as exc:
            raise StateUnavailableError(
                f"{self.file}: cannot write the state file, nothing was changed: "
                f"{exc.strerror or exc}"
            ) from None
        self._state = state
        self._has_dynamic = True
        self._signature = self._stat_signature()
        if state.owns_keys:
            # The key section now lives in the dynamic part of the file.
            self._signature = None
            self._refresh()

    def _seed_from_database(self, state_path: Path, keys: MasterKeySource | None) -> None:
        db = SqliteStore.open(state_path)
        try:
            db.use_sealer(_DatabaseSealer(db.key_params(), state_path, keys))
            with db.snapshot():
                state = _Doc(
                    chain=db.chain_state(),
                    seeds={k: db.seed(k) for k in SEED_KINDS},
                    params={
                        kind: db.params(kind, model).model_dump(mode="json")
                        for kind, model in PARAMS_MODELS.items()
                    },
                    plan=db.upgrade_plan(),
                    versions=db.node_versions(),
                    nodes=[_in_clear(n) for n in db.nodes()],
                    merged=db.find_import("node_config") is not None,
                    keys=dict(self._state.keys),
                )
                secret = db.secret(WORKER_KEY_SECRET)
                params = db.key_params()
        finally:
            db.close()
        if secret is not None and not (
            self._state.keys.get("worker_public") and self._state.keys.get("worker_private")
        ):
            pair = json.loads(secret)
            if is_sealed(pair["private"]):
                pair["private"] = _unseal_worker_key(pair["private"], params, state_path, keys)
            state.keys["worker_public"] = state.keys.get("worker_public") or pair["public"]
            state.keys["worker_private"] = state.keys.get("worker_private") or pair["private"]
            state.owns_keys = True
        with self._thread_lock, file_lock(self._lock_path):
            self._write(state)
        log.warning(
            "%s: API_STATE_MODE=yaml: state copied from %s into this file", self.file, state_path
        )

    # --- transactions --------------------------------------------------------------------

    @property
    def path(self) -> str:
        return str(self.file)

    def close(self) -> None:
        self._closed = True

    def _view(self) -> _Doc:
        if self._closed:
            raise StateUnavailableError(f"{self.file}: the state store is closed")
        work: _Doc | None = getattr(self._local, "work", None)
        if work is not None:
            return work
        pinned: _Doc | None = getattr(self._local, "pinned", None)
        if pinned is not None:
            return pinned
        self._refresh()
        return self._state

    def _work(self) -> _Doc:
        work: _Doc | None = getattr(self._local, "work", None)
        if work is None:
            raise StateUnavailableError("a state write must run inside transaction()")
        self._local.dirty = True
        return work

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """One atomic change of the file; nested blocks roll back on their own.

        Every change is fsynced (temp file, fsync, rename, directory fsync), so ``durable``
        changes nothing here.
        """
        work: _Doc | None = getattr(self._local, "work", None)
        if work is not None:
            saved = copy.deepcopy(work)
            try:
                yield
            except BaseException:
                self._local.work = saved
                raise
            return
        if self._closed:
            raise StateUnavailableError(f"{self.file}: the state store is closed")
        started = time.perf_counter()
        written = False
        with self._thread_lock, file_lock(self._lock_path):
            try:
                self._refresh()
                self._local.work = copy.deepcopy(self._state)
                self._local.dirty = False
                try:
                    yield
                    if self._local.dirty:
                        self._write(self._local.work)
                        written = True
                finally:
                    self._local.work = None
                if written:
                    for hook in self._commit_hooks:
                        try:
                            hook()
                        except Exception:
                            log.exception("post-commit hook failed")
            finally:
                elapsed = time.perf_counter() - started
                for observer in self._observers:
                    with contextlib.suppress(Exception):
                        observer(elapsed, written)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the file."""
        if getattr(self._local, "work", None) is not None or getattr(self._local, "pinned", None):
            yield
            return
        self._local.pinned = self._view()
        try:
            yield
        finally:
            self._local.pinned = None

    @contextlib.contextmanager
    def acting_as(self, actor: str) -> Iterator[None]:
        token = current_actor.set(actor)
        try:
            yield
        finally:
            current_actor.reset(token)

    # --- reads ---------------------------------------------------------------------------

    def hot_values(self) -> tuple[int, str]:
        chain = self._view().chain
        return int(chain.get(HEIGHT, "0")), chain.get(NODE_VERSION, "")

    def chain_state(self) -> dict[str, str]:
        return dict(self._view().chain)

    def node_versions(self) -> list[NodeVersion]:
        return [v.model_copy() for v in self._view().versions]

    def seed(self, kind: SeedKind) -> SeedInfo:
        return self._view().seeds.get(kind, SeedInfo()).model_copy()

    def params(self, kind: str, model: type[ParamsT]) -> ParamsT:
        data = self._view().params.get(kind)
        return model() if data is None else model.model_validate(data)

    def upgrade_plan(self) -> UpgradePlan:
        return self._view().plan.model_copy(deep=True)

    def nodes(self) -> list[InferenceNodeConfig]:
        return [n.model_copy(deep=True) for n in self._view().nodes]

    def node(self, node_id: str) -> InferenceNodeConfig:
        for n in self._view().nodes:
            if n.id == node_id:
                return n.model_copy(deep=True)
        raise NodeNotFoundError(node_id)

    def nodes_page(self, after: str | None, limit: int) -> list[InferenceNodeConfig]:
        nodes = self._view().nodes
        start = 0
        if after is not None:
            start = next((i + 1 for i, n in enumerate(nodes) if n.id == after), -1)
            if start < 0:
                raise NodeNotFoundError(after)
        return [n.model_copy(deep=True) for n in nodes[start : start + limit]]

    def node_count(self) -> int:
        return len(self._view().nodes)

    def enabled_node_count(self) -> int:
        return sum(1 for node in self._view().nodes if node.is_enabled)

    def secret(self, name: str) -> str | None:
        keys = self._view().keys
        if name == WORKER_KEY_SECRET and keys.get("worker_public") and keys.get("worker_private"):
            return json.dumps({"public": keys["worker_public"], "private": keys["worker_private"]})
        return None

    def latest_revision(self) -> int:
        return 0

    def find_import(self, kind: str) -> dict[str, Any] | None:
        if kind == "node_config" and self._view().merged:
            return {
                "source_path": str(self.file),
                "checksum": "",
                "imported_at": None,
                "details": {"from": MERGED_FLAG_ORIGIN},
            }
        return None

    # --- writes --------------------------------------------------------------------------

    def set_height(self, height: int) -> tuple[int, str | None]:
        work = self._work()
        old = int(work.chain.get(HEIGHT, "0"))
        work.chain[HEIGHT] = str(height)
        due = [v for v in work.versions if v.height <= height]
        new_version: str | None = None
        if due:
            new_version = due_winner(due)
            work.versions = [v for v in work.versions if v.height > height]
            work.chain[NODE_VERSION] = new_version
        return old, new_version

    def set_chain_value(self, key: str, value: str) -> None:
        self._work().chain[key] = value

    def add_node_version(self, version: NodeVersion) -> bool:
        work = self._work()
        if any(v == version for v in work.versions):
            return False
        work.versions.append(version.model_copy())
        work.versions.sort(key=lambda v: v.height)
        return True

    def replace_node_versions(self, versions: Sequence[NodeVersion]) -> None:
        unique: list[NodeVersion] = []
        for v in versions:
            if v not in unique:
                unique.append(v.model_copy())
        self._work().versions = from_go_stack(unique)

    def set_seed(self, kind: SeedKind, seed: SeedInfo) -> None:
        self._work().seeds[kind] = seed.model_copy()

    def rotate_seeds(self) -> None:
        work = self._work()
        before = {k: work.seeds.get(k, SeedInfo()) for k in SEED_KINDS}
        work.seeds = {
            "previous": before["current"],
            "current": before["upcoming"],
            "upcoming": SeedInfo(),
        }

    def set_params(self, kind: str, params: BaseModel) -> None:
        self._work().params[kind] = params.model_dump(mode="json")

    def set_upgrade_plan(self, plan: UpgradePlan) -> None:
        self._work().plan = plan.model_copy(deep=True)

    def add_node(self, node: InferenceNodeConfig) -> None:
        work = self._work()
        if any(n.id == node.id for n in work.nodes):
            raise DuplicateNodeError(node.id)
        work.nodes.append(node.model_copy(deep=True))

    def add_nodes(self, nodes: Sequence[InferenceNodeConfig]) -> None:
        for node in nodes:
            self.add_node(node)

    def _index(self, work: _Doc, node_id: str) -> int:
        for i, n in enumerate(work.nodes):
            if n.id == node_id:
                return i
        raise NodeNotFoundError(node_id)

    def update_node(
        self, node: InferenceNodeConfig, *, old: InferenceNodeConfig | None = None
    ) -> InferenceNodeConfig:
        work = self._work()
        i = self._index(work, node.id)
        old = work.nodes[i]
        work.nodes[i] = node.model_copy(deep=True)
        return old

    def remove_node(self, node_id: str) -> InferenceNodeConfig:
        work = self._work()
        return work.nodes.pop(self._index(work, node_id))

    def set_node_enabled(self, node_id: str, enabled: bool) -> InferenceNodeConfig:
        work = self._work()
        i = self._index(work, node_id)
        work.nodes[i] = work.nodes[i].model_copy(update={"is_enabled": enabled})
        return work.nodes[i].model_copy(deep=True)

    def replace_nodes(
        self, nodes: Sequence[InferenceNodeConfig], *, keep_admin_state: Collection[str] = ()
    ) -> None:
        work = self._work()
        stored = {n.id: n for n in work.nodes or []}
        work.nodes = [
            with_admin_state_of(stored[n.id], n).model_copy(deep=True)
            if n.id in keep_admin_state and n.id in stored
            else n.model_copy(deep=True)
            for n in nodes
        ]

    def set_worker_key(
        self, public: str, private: str, *, fingerprint: str, seal: Callable[[str, str], str]
    ) -> None:
        """The pair goes into ``ml_node_key_config`` in clear: this file is the predecessor's
        single file and its binary reads the key there (``seal`` is not used)."""
        del seal
        work = self._work()
        work.keys = {**work.keys, "worker_public": public, "worker_private": private}
        work.owns_keys = True
        log.info("worker key %s written to %s", fingerprint, self.file)

    # --- the rest of the core: what the single file does its own way ---------------------

    file_backed: ClassVar[bool] = True

    @property
    def in_transaction(self) -> bool:
        return getattr(self._local, "work", None) is not None

    def on_commit(self, hook: Callable[[], None]) -> Callable[[], None]:
        return register_hook(self._commit_hooks, hook)

    def observe_transactions(self, observer: Callable[[float, bool], None]) -> Callable[[], None]:
        return register_hook(self._observers, observer)

    def use_sealer(self, sealer: Sealer) -> None:
        """Nothing to seal: the predecessor's file holds node tokens in clear."""

    def probe(self) -> None:
        self.hot_values()  # re-reads the file if it changed; raises when it is unusable

    def backup_before(self, reason: str, *, keep: int) -> BackupInfo | None:
        """Before a risky change of the file itself: a byte copy of it beside it,
        ``<file>.pre-<reason>.<UTC time>`` (0600), keeping the newest ``keep`` (0: all)."""
        tag = reason if reason.startswith("pre-") else f"pre-{reason}"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.file.with_name(f"{self.file.name}.{tag}.{stamp}")
        try:
            atomic_write(target, self.file.read_bytes(), mode=0o600)
        except OSError as exc:
            raise BackupError(
                f"cannot back up {self.file} before {reason} to {target}: "
                f"{exc.strerror or exc}; nothing was changed"
            ) from None
        copies = sorted(self.file.parent.glob(f"{glob.escape(self.file.name)}.{tag}.*"))
        for old in copies[: max(0, len(copies) - keep)] if keep else []:
            with contextlib.suppress(OSError):
                old.unlink()
        log.warning("%s backed up to %s before %s", self.file, target, reason)
        return None

    def own_files(self) -> list[Path]:
        """The legacy file and the copies taken before risky changes."""
        return [self.file, *self.file.parent.glob(f"{glob.escape(self.file.name)}.pre-*")]

    def record_import(
        self, kind: str, source_path: str, checksum: str, details: dict[str, Any]
    ) -> None:
        if kind != "node_config":
            raise StateUnavailableError(
                f"import of {kind!r} needs the state database (API_STATE_MODE=yaml)"
            )
        self._work().merged = True


def _unseal_worker_key(
    sealed: str, params: str | None, state_path: Path, keys: MasterKeySource | None
) -> str:
    if params is None or keys is None:
        raise MasterKeyError(
            f"{state_path}: the worker key in the state database is encrypted and no master "
            "key was given to decrypt it"
        )
    box, _ = keys.box(KeyParams.from_json(params, str(state_path)))
    return box.open(sealed, WORKER_KEY_SECRET)


def _in_clear(node: InferenceNodeConfig) -> InferenceNodeConfig:
    """``node`` with its token opened (the file holds it in clear)."""
    if node.auth_token is None:
        return node
    return node.model_copy(update={"auth_token": SecretStr(node.auth_token.get_secret_value())})


def _defaults(kind: str) -> dict[str, Any]:
    return PARAMS_MODELS[kind]().model_dump(mode="json")


class _DatabaseSealer:
    """Opens the node tokens of the state database being copied into the file."""

    def __init__(self, params: str | None, state_path: Path, keys: MasterKeySource | None):
        self.params, self.state_path, self.keys = params, state_path, keys

    def _box(self) -> SecretBox:
        if self.params is None or self.keys is None:
            raise MasterKeyError(
                f"{self.state_path}: the node tokens in the state database are encrypted and "
                "no master key was given to decrypt them"
            )
        return self.keys.box(KeyParams.from_json(self.params, str(self.state_path)))[0]

    def seal(self, plaintext: str, context: str) -> str:
        return self._box().seal(plaintext, context)

    def open(self, token: str, context: str) -> str:
        return self._box().open(token, context)
