"""No operation of a process that has the state open drops SQLite's locks on it (issue:
a ``/readyz`` probe read the header by path and closed the descriptor, which released every
POSIX lock the service held; the next CLI command then deleted the live ``-wal``).

Each operation runs in this process beside an open manager; ``/proc/locks`` must still show
this process's locks on the state file and its ``-shm`` afterwards. A source check keeps
by-path opens of files out of the store, but for the one module that holds descriptors."""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.export import export_once
from dapi_config.health import Readiness, overview
from dapi_config.store import _held_files, recovery, sqlcipher
from dapi_config.store.backup import read_header
from tests._locks import assert_holds_locks

SRC_STORE = Path(__file__).resolve().parents[2] / "src" / "dapi_config" / "store"


def _node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host="10.0.0.5", inference_port=5000, poc_port=8080)


@pytest.fixture
def live(config_file: Path) -> Iterator[ConfigManager]:
    cm = ConfigManager.open(config_file)
    try:
        cm.add_node(_node("n0"))
        cm.get_nodes()
        yield cm
    finally:
        cm.close()


def _second_manager(cm: ConfigManager) -> None:
    other = ConfigManager.open(cm.config_path)
    other.get_nodes()
    other.close()


OPERATIONS: dict[str, Callable[[ConfigManager], object]] = {
    "readiness probe": lambda cm: Readiness(cm).report(),
    "overview": lambda cm: overview(cm, Readiness(cm)),
    "check": lambda cm: cm.check(),
    "backup": lambda cm: cm.backup(),
    "list backups (verified)": lambda cm: (cm.backup(), cm.list_backups(verify=True)),
    "export": export_once,
    "export of the tables": lambda cm: cm.export_tables(),
    "restore": lambda cm: cm.restore_backup(cm.backup().path),
    "diagnose": lambda cm: recovery.diagnose(cm.state_path, cm.state_path.parent / "backups"),
    "header read": lambda cm: read_header(cm.state_path),
    "plain-header test": lambda cm: sqlcipher.has_plain_header(cm.state_path),
    "master key check": lambda cm: cm.check_master_key(),
    "security key": lambda cm: cm.create_security_key("n0"),
    "a second manager opened and closed": _second_manager,
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_an_operation_keeps_the_locks(live: ConfigManager, operation: str) -> None:
    state = live.state_path
    assert_holds_locks(os.getpid(), state, "the first write")
    OPERATIONS[operation](live)
    assert_holds_locks(os.getpid(), state, operation)
    live.add_node(_node("n1"))  # and the store still writes
    assert_holds_locks(os.getpid(), state, f"{operation} and a write")


def test_the_held_descriptor_is_released_when_the_last_user_closes(config_file: Path) -> None:
    before = _held_files.held_count()
    cm = ConfigManager.open(config_file)
    cm.get_nodes()
    assert _held_files.held_count() == before + 1
    read_header(cm.state_path)  # shares it
    assert _held_files.held_count() == before + 1
    cm.close()
    assert _held_files.held_count() == before
    read_header(cm.state_path)  # nobody holds the file: opened and closed again
    assert _held_files.held_count() == before


# Modules of the store allowed to open files by path, and why.
_OPENERS = {
    "_held_files.py": "the one descriptor per live state file",
    "_wal_index.py": "maps -shm by the same rule (closed only once unlinked)",
    "recovery.py": "directories only (flock claims), never a state file",
    "_writer_lock.py": "its own lock file beside the state, never the state file",
}


def _opens(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (
            func.id
            if isinstance(func, ast.Name)
            else func.attr
            if isinstance(func, ast.Attribute)
            else ""
        )
        is_os_open = (
            isinstance(func, ast.Attribute)
            and func.attr == "open"
            and isinstance(func.value, ast.Name)
            and func.value.id == "os"
        )
        by_name = isinstance(func, ast.Name) and name == "open"
        if by_name or is_os_open or name in ("read_bytes", "read_text", "fdopen"):
            lines.append(node.lineno)
    return lines


def test_only_the_held_descriptor_module_opens_files_in_the_store() -> None:
    found = {}
    for path in sorted(SRC_STORE.rglob("*.py")):
        lines = _opens(ast.parse(path.read_text()))
        if lines and path.name not in _OPENERS:
            found[str(path.relative_to(SRC_STORE))] = lines
    assert found == {}, f"by-path opens in the store outside {sorted(_OPENERS)}: {found}"
