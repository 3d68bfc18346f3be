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
import signal
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
    #: How to stop and start it again (None for a server given by URL).
    control: _Control | None = None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would, recovery at the next start)."""
        if self.control is None:
            pytest.skip("the server given by DAPI_CONFIG_TEST_PG_URL cannot be stopped here")
        self.control.pg_ctl("-m", mode, "stop")

    def start(self) -> None:
        if self.control is None:
            pytest.skip("the server given by DAPI_CONFIG_TEST_PG_URL cannot be started here")
        self.control.start()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server and every backend stopped (SIGSTOP) as a stall would stop them: its
        kernel still accepts and acknowledges, nothing answers. Resumed (SIGCONT) after."""
        if self.control is None:
            pytest.skip("the server given by DAPI_CONFIG_TEST_PG_URL cannot be stopped here")
        pids = self.control.server_pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    template: str | None = None

    def fresh_database(self, *, empty: bool = False) -> str:
        """A new database; returns its URL. Unless ``empty``, it is a copy of a template that
        already holds the current schema (copying is faster than applying every step)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        source = "template0" if empty else self._migrated_template()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY')
        return self.url(name)

    def reset(self, url: str) -> None:
        """Empty every state table of ``url`` (a database from :meth:`fresh_database`), for
        tests that run many examples on one database."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                    "current_schema() AND table_name <> 'schema_migrations'"
                )
            ]
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")

    def _migrated_template(self) -> str:
        if self.template is None:
            from dapi_config.store.postgres import PostgresStore

            url = self.fresh_database(empty=True)
            PostgresStore.open(url).close()  # applies every schema step
            self.template = url.rsplit("/", 1)[1]
        return self.template


@dataclass
class _Control:
    bins: Path
    data: Path
    log: Path
    options: str
    as_user: list[str]

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bins / "pg_ctl"), "-D", str(self.data), "-w", *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.pg_ctl("-l", str(self.log), "-t", "60", "start", "-o", self.options)

    def server_pids(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The command name may hold spaces: the parent pid follows its closing ')'.
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]


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


#: Settings of the contract tests' cluster: no fsync (a test database is thrown away, and
#: creating one per test is 10x faster). A power-loss test starts its own with ``durable``.
FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


@contextlib.contextmanager
def local_server(*, durable: bool = False) -> Iterator[PgServer]:
    """Start a cluster for this test session (stopped at the end)."""
    tuning = "-c fsync=on" if durable else FAST
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

    control = _Control(
        bins,
        data,
        log,
        f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=300 {tuning}",
        as_user,
    )
    try:
        subprocess.run(
            [*as_user, str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        control.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"the throwaway cluster did not start: {detail.decode(errors='replace')}")
    try:
        yield PgServer(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", "127.0.0.1", port, control
        )
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
