"""A throwaway PostgreSQL for the tests: a fresh cluster in a temp dir on a loopback port,
started from the server binaries installed on the machine (as the ``postgres`` system user
when the tests run as root: ``initdb`` refuses root), or the server ``DAPI_CONFIG_TEST_PG_URL``
names. Where neither exists the tests that need it skip with the reason; with
``DAPI_CONFIG_REQUIRE_PG=1`` (set by ``.ci/run``) they fail instead."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Read at import: the autouse clean_env fixture strips DAPI_* from each test's environment.
GIVEN_URL = os.environ.get("DAPI_CONFIG_TEST_PG_URL", "").strip()
REQUIRED = os.environ.get("DAPI_CONFIG_REQUIRE_PG", "").strip() not in ("", "0")


@dataclass
class PgServer:
    """A running server: ``admin_url`` reaches its ``postgres`` database as a superuser."""

    admin_url: str
    host: str
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def fresh_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def unavailable(reason: str) -> None:
    """Skip (or, when PostgreSQL is required, fail) with ``reason``."""
    if REQUIRED:
        pytest.fail(f"PostgreSQL is required (DAPI_CONFIG_REQUIRE_PG=1) but {reason}")
    pytest.skip(f"no PostgreSQL: {reason}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def local_server() -> Iterator[PgServer]:
    """Start a cluster for this test session (stopped at the end)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install 'dapi-config[postgres]')")
    if GIVEN_URL:
        yield _given_server(GIVEN_URL)
        return
    bins = _bin_dir()
    if bins is None:
        unavailable("no server binaries under /usr/lib/postgresql/*/bin")
        return
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' system user for initdb")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="dapi-pg-"))
    data = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    log = root / "server.log"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(
            str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
            "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=on -c max_connections=200",
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"the throwaway cluster did not start: {detail.decode(errors='replace')}")
    try:
        yield PgServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", "127.0.0.1", port)
    finally:
        subprocess.run(
            [*as_user, str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def _given_server(url: str) -> PgServer:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5):
                break
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                unavailable(f"DAPI_CONFIG_TEST_PG_URL cannot be reached: {exc}")
            time.sleep(0.2)
    info = conninfo_to_dict(url)
    return PgServer(url, str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))
