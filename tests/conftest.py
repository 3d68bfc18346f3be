"""Shared fixtures: real files in tmp_path, a clean environment, managers that always close."""

from __future__ import annotations

import ast
import contextlib
import functools
import gc
import inspect
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import cast

import hypothesis
import pytest

from dapi_config import ConfigManager
from tests._browser import browser_page, chromium  # noqa: F401  (fixtures for the browser tests)
from tests._examples import QUICK
from tests._postgres import PgServer, local_server

EXAMPLE_CONFIG = """\
# operator's note: keep this comment
api:
  port: 8080
  public_url: http://127.0.0.1:9000
  admin_server_port: 9200
chain_node:
  url: http://127.0.0.1:26657
  signer_key_name: operator
  keyring_backend: test
ml_node_key_config:
  worker_public: ""
  worker_private: ""
nats:
  host: 127.0.0.1
  port: 4222
"""

if QUICK:
    # make test-fast: property tests without their own example count draw 20 (100 in CI).
    hypothesis.settings.register_profile("quick", max_examples=20)
    hypothesis.settings.load_profile("quick")

_OUR_VARS = (
    "API_",
    "DAPI_",
    "CONFIG_EXPORT_",
    "NODE_CONFIG_",
    "KEY_NAME",
    "ACCOUNT_PUBKEY",
    "KEYRING_BACKEND",
    "KEYRING_PASSWORD",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's or CI's own dapi-config variables."""
    for var in list(os.environ):
        if var.startswith(_OUR_VARS):
            monkeypatch.delenv(var, raising=False)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A valid static config file in a fresh directory."""
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE_CONFIG)
    path.chmod(0o600)
    return path


#: The master key the PostgreSQL runs use (there is no key file on a shared state).
TEST_STATE_KEY = "test-master-key-0123456789"
BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_backends`` (the contract tests) run once per state backend."""
    definition = metafunc.definition
    if (
        "state_backend" in metafunc.fixturenames
        and definition.get_closest_marker("both_backends")
        and not definition.get_closest_marker("sqlite_only")
    ):
        # The manager contract also runs against RemoteConfigManager over a served state:
        # the proof that the library, HTTP and the remote client agree (SPEC §15).
        remote = bool(definition.get_closest_marker("remote_contract")) and not (
            definition.get_closest_marker("local_only")
        )
        metafunc.parametrize(
            "state_backend", (*BACKENDS, "remote") if remote else BACKENDS, indirect=True
        )


#: Fixtures that make a test need a part the machine may lack (see the ``postgres`` and
#: ``browser`` markers), and the modules whose tests must not run beside each other on a
#: parallel run: they kill processes on timers, mount a file system or measure.
_PG_FIXTURES = frozenset({"pg_server", "durable_pg"})
_BROWSER_FIXTURES = frozenset({"chromium", "browser_page"})
MACHINE_GROUP = "machine"


#: Names whose use means a test starts processes of its own (the CLI, ``serve``, children).
_SPAWNERS = frozenset(
    {"run_cli", "serve_process", "start_serve_process", "subprocess", "run_child", "executable"}
)


@functools.cache
def _spawning_names(module: ModuleType) -> frozenset[str]:
    """The module's functions (tests, helpers, fixtures) that start processes, directly or
    through another of its functions or fixtures."""
    tree = ast.parse(inspect.getsource(module))
    uses = {
        node.name: {
            *(n.id for n in ast.walk(node) if isinstance(n, ast.Name)),
            *(n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)),
            *(a.arg for a in node.args.args),
        }
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    spawning = set(_SPAWNERS)
    grew = True
    while grew:
        grew = False
        for name, used in uses.items():
            if name not in spawning and used & spawning:
                spawning.add(name)
                grew = True
    return frozenset(spawning)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what each test needs, so that ``make test-fast`` can leave it out: ``postgres``
    for the tests on a PostgreSQL server (the contract tests' second run included),
    ``browser`` for those driving Chromium, ``processes`` for those that start the CLI,
    ``serve`` or other processes (end to end: each costs an interpreter start)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("state_backend") if callspec is not None else None
        if backend == "postgres" or names & _PG_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if backend == "remote":
            item.add_marker(pytest.mark.remote)
        if names & _BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
        function = getattr(item, "function", None)
        module = getattr(item, "module", None)
        if function is not None and module is not None:
            spawning = _spawning_names(module)
            if function.__name__ in spawning or names & spawning:
                item.add_marker(pytest.mark.processes)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL for the session (see tests/_postgres.py)."""
    with local_server() as server:
        yield server


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` (the default), or ``postgres`` in the contract tests' second run."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def state_env(request: pytest.FixtureRequest, state_backend: str) -> dict[str, str]:
    """The environment that puts a manager's state on the backend under test: empty for
    SQLite (the state file beside the config), a fresh PostgreSQL database otherwise."""
    if state_backend == "sqlite":
        return {}
    server: PgServer = request.getfixturevalue("pg_server")
    return {"API_STATE_URL": server.fresh_database(), "API_STATE_KEY": TEST_STATE_KEY}


@pytest.fixture
def manager(
    config_file: Path, state_env: dict[str, str], state_backend: str
) -> Iterator[ConfigManager]:
    """An open ConfigManager on a fresh state (closed after the test); for the ``remote``
    run of the contract, a RemoteConfigManager of that state served on a loopback port."""
    cm = ConfigManager.open(config_file, env=state_env)
    try:
        if state_backend != "remote":
            yield cm
            return
        from dapi_config.api import create_app
        from dapi_config.remote import RemoteConfigManager
        from tests.api.conftest import serve_app

        server = serve_app(create_app(cm), cm)
        remote = RemoteConfigManager(server.url)
        try:
            yield cast("ConfigManager", remote)
        finally:
            remote.close()
            server.stop()
    finally:
        cm.close()


def raw_rows(cm: ConfigManager, sql: str) -> list[tuple[object, ...]]:
    """Rows of ``sql`` read straight from ``cm``'s state, past the library: with the stdlib on a
    SQLite file, with psycopg on PostgreSQL."""
    location = cm.state_location
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as conn:
            return [tuple(r) for r in conn.execute(sql)]
    with sqlite_file(location) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def raw_execute(cm: ConfigManager, sql: str) -> None:
    """Change ``cm``'s state past the library (a tamper test): with the stdlib on a SQLite
    file, with psycopg on PostgreSQL."""
    location = cm.state_location
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as conn:
            conn.execute(sql)
        return
    with sqlite_file(location) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def sqlite_file(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A plain stdlib connection to ``path`` that commits on success and is always closed
    (``with sqlite3.connect(...)`` commits but never closes: Python 3.13 warns at GC)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def collect_garbage_at_teardown() -> Iterator[None]:
    """Collect at each test's end, so a connection a test (or the product) left unclosed warns
    (Python >= 3.13) in the test that leaked it, and the warning is an error there, instead of
    failing whichever test the collector happens to run in."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        # A full collection costs ~0.15 s in a worker that holds apps and schemas: most of a
        # quick run's time. Python 3.13 (whose sqlite3 warns of an unclosed connection, the
        # reason for this) gets it; older ones collect the young generations, where what a
        # test just dropped is.
        gc.collect() if sys.version_info >= (3, 13) else gc.collect(1)


def permissions_enforced_prefix() -> list[str]:
    """argv prefix under which file permissions apply even when the tests run as root.

    CI runs as root, which ignores file modes. ``setpriv`` drops the two capabilities that let
    root bypass them (the process stays root, so it can still run the interpreter).
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes cannot be enforced")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    prefix: list[str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dapi_config ARGS`` as a real subprocess (optionally under ``prefix``),
    with ``input`` on its stdin."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_VARS)}
    full_env.update(env or {})
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "dapi_config", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
        # No input: an empty stdin that is never a terminal, as in a script (a command that asks
        # on a terminal must not wait for an answer here).
        **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}),
    )
