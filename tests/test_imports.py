"""Heavy and optional modules are imported when first needed, not at start (service memory).

A ``serve`` over a state with no secret and no encryption must not load the SQLCipher driver
(~7 MiB resident), cryptography (~8 MiB), rich (the CLI's output) or Jinja2 (until the console
is opened); and once the driver is loaded, every ``except`` of the store catches its error
classes, including in modules imported before it was.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dapi_config import __version__
from dapi_config.store import connection, sqlcipher

SRC = Path(__file__).resolve().parent.parent / "src" / "dapi_config"

_PROBE = """
import json, sys
from pathlib import Path
from dapi_config import ConfigManager
from dapi_config.api import create_app
import dapi_config.cli, dapi_config.service
root = Path(sys.argv[1])
cm = ConfigManager.open(root / "config.yaml", root / "state.db", env={})
cm.set_height(5)
app = create_app(cm)
app.openapi()
before = {m: m in sys.modules for m in ("sqlcipher3", "cryptography", "jinja2", "rich")}
from starlette.testclient import TestClient
with TestClient(app) as client:
    assert client.get("/").status_code == 200
after = {"jinja2": "jinja2" in sys.modules}
cm.close()
print(json.dumps({"before": before, "after": after}))
"""


def test_a_plain_service_loads_no_driver_crypto_or_templates(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("api:\n  port: 9000\n")
    (tmp_path / "config.yaml").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["before"] == {
        "sqlcipher3": False,
        "cryptography": False,
        "jinja2": False,
        "rich": False,
    }
    assert seen["after"] == {"jinja2": True}  # the console's first page view loads it


def test_the_driver_errors_join_the_store_error_classes_when_it_loads() -> None:
    module = sqlcipher.driver()
    if module is None:
        pytest.skip("the encryption extra (sqlcipher3) is not installed")
    assert module.Error in connection.SQLITE_ERRORS
    assert module.IntegrityError in connection.INTEGRITY_ERRORS
    assert module.OperationalError in connection.OPERATIONAL_ERRORS
    conn = module.connect(":memory:")
    try:
        with pytest.raises(connection.SQLITE_ERRORS):
            conn.execute("SELECT * FROM no_such_table")
    finally:
        conn.close()


def test_a_callback_registered_after_the_driver_loaded_runs_at_once() -> None:
    module = sqlcipher.driver()
    if module is None:
        pytest.skip("the encryption extra (sqlcipher3) is not installed")
    seen: list[object] = []
    sqlcipher.when_driver_loaded(seen.append)
    try:
        assert seen == [module]
    finally:
        sqlcipher._on_driver_loaded.remove(seen.append)


def test_no_module_binds_the_error_tuples_at_import() -> None:
    """``from ...connection import SQLITE_ERRORS`` would keep the tuple as it was before the
    driver loaded: its errors would escape that module's ``except`` clauses."""
    names = {"SQLITE_ERRORS", "INTEGRITY_ERRORS", "OPERATIONAL_ERRORS"}
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("connection"):
                bound = names & {alias.name for alias in node.names}
                if bound:
                    offenders.append(f"{path.relative_to(SRC)}: {sorted(bound)}")
    assert offenders == []


def test_connection_reads_the_error_tuples_only_when_an_error_is_matched() -> None:
    """Inside the module, a class attribute or default argument made from a tuple keeps it as
    it was at import time, just like an import would."""
    names = {"SQLITE_ERRORS", "INTEGRITY_ERRORS", "OPERATIONAL_ERRORS"}
    tree = ast.parse((SRC / "store" / "connection.py").read_text())
    offenders = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults = [*node.args.defaults, *node.args.kw_defaults]
            for default in filter(None, defaults):
                offenders.extend(
                    n.id for n in ast.walk(default) if isinstance(n, ast.Name) and n.id in names
                )
            return  # read when the function runs: current
        if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
            offenders.append(f"line {node.lineno}: {node.id}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    assert offenders == []


def _modules_after(code: str) -> set[str]:
    """The modules loaded in a fresh interpreter after ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_package_imports_none_of_its_parts() -> None:
    """Seen on main: ``import dapi_config`` loaded the manager, the legacy readers, the store
    and pydantic (~0.4 s before any command could run). Names are imported when first used."""
    loaded = _modules_after("import dapi_config")
    ours = {m for m in loaded if m.startswith("dapi_config")}
    assert ours == {"dapi_config"}
    assert not {"pydantic", "fastapi", "psycopg", "typer"} & loaded
    used = _modules_after("from dapi_config import ValidationError, SeedInfo")
    assert "dapi_config.models" in used
    assert not {m for m in used if m.startswith(("dapi_config.legacy", "dapi_config.api"))}
    assert not {"dapi_config.manager", "dapi_config.store.postgres", "fastapi"} & used


def test_the_manager_loads_the_predecessors_readers_only_to_use_them() -> None:
    """Opening a state only asks whether the config file holds the predecessor's keys: the
    ``gonka.db`` reader, the migration and the text surgery are loaded when one is used."""
    loaded = _modules_after("import dapi_config.manager")
    heavy = {"dapi_config.legacy.gonka_db", "dapi_config.legacy.migrate", "dapi_config.legacy.text"}
    assert not heavy & loaded
    used = _modules_after("from dapi_config import legacy\nlegacy.import_gonka_db")
    assert "dapi_config.legacy.gonka_db" in used


def test_the_cli_loads_the_api_only_to_serve() -> None:
    """``dapi-config status`` and ``--help`` never load FastAPI or the API modules."""
    loaded = _modules_after(
        "import sys\nsys.argv = ['dapi-config', '--help']\nfrom dapi_config.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    assert "dapi_config.cli.status" in loaded  # the commands are registered
    assert not {m for m in loaded if m.startswith("dapi_config.api")}
    assert not {"fastapi", "starlette", "uvicorn", "psycopg"} & loaded


def test_version_answers_without_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dapi_config", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == __version__
    assert "dapi_config.cli.status" not in result.stderr  # importtime names every import
    assert "typer" not in result.stderr


def test_the_catalogue_loads_the_store_contract_not_the_store() -> None:
    """The catalogue (the CLI's commands and the API's routes are made from it) needs the
    backend contract only: not the SQLite store, its statements, backups and recovery."""
    loaded = _modules_after("import dapi_config.catalogue")
    assert "dapi_config.store.backend" in loaded
    heavy = {
        "dapi_config.store.sqlite",
        "dapi_config.store.connection",
        "dapi_config.store.queries",
        "dapi_config.store.backup",
        "dapi_config.store.recovery",
        "dapi_config.store.postgres",
    }
    assert not heavy & loaded
    store = _modules_after("from dapi_config.store import SqliteStore")
    assert "dapi_config.store.sqlite" in store
