"""PostgreSQL stopped under a running replica: writes fail with 503 (nothing half-done),
``/readyz`` says 503, hot reads keep serving the last values; when the server is back, writes
resume on their own. An immediate (crash-like) server restart loses no acknowledged change."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dapi_config import CommitUnknownError, ConfigManager, StateUnavailableError
from tests._postgres import PgServer, local_server
from tests.api.conftest import ServeProcess
from tests.api.test_nodes import NODES
from tests.conftest import TEST_STATE_KEY

Serve = Callable[..., ServeProcess]


def node(node_id: str) -> dict[str, object]:
    return {"id": node_id, "host": "10.0.0.9", "inference_port": 5000, "poc_port": 8080}


def test_server_down_then_back(
    pg_server: PgServer, config_file: Path, serve_process: Serve
) -> None:
    url = pg_server.fresh_database()
    env = {"API_STATE_URL": url, "API_STATE_KEY": TEST_STATE_KEY}
    replica = serve_process(config_file, env=env)
    with ConfigManager.open(config_file, env=env) as cm:
        assert httpx.post(f"{replica.url}{NODES}", json=node("before")).status_code == 200
        cm.set_height(77)
        assert cm.get_height() == 77
        pg_server.stop("fast")
        try:
            r = httpx.post(f"{replica.url}{NODES}", json=node("during"), timeout=60)
            assert r.status_code == 503
            assert r.json()["code"] == "state_unavailable"
            assert httpx.get(f"{replica.url}/readyz", timeout=60).status_code == 503
            assert httpx.get(f"{replica.url}/livez", timeout=60).status_code == 200
            assert cm.get_height() == 77  # a hot read keeps serving
            with pytest.raises(StateUnavailableError) as err:
                cm.set_height(78)
            assert "PostgreSQL" in str(err.value)
        finally:
            pg_server.start()
        # Back: writes resume without a restart of the replica.
        r = httpx.post(f"{replica.url}{NODES}", json=node("after"), timeout=60)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{replica.url}/readyz").status_code == 200
        cm.set_height(79)
        listed = {n["node"]["id"] for n in httpx.get(f"{replica.url}{NODES}").json()}
        assert listed == {"before", "after"}  # the failed write left nothing behind


@pytest.fixture(scope="module")
def durable_pg() -> Iterator[PgServer]:
    """A cluster of its own with fsync and synchronous commits on (the shared one trades them
    for speed, so a crash-like stop loses its last commits by design)."""
    with local_server(durable=True) as server:
        yield server


def test_immediate_restart_keeps_every_acknowledged_change(
    durable_pg: PgServer, config_file: Path
) -> None:
    pg_server = durable_pg
    url = pg_server.fresh_database()
    env = {"API_STATE_URL": url, "API_STATE_KEY": TEST_STATE_KEY}
    with ConfigManager.open(config_file, env=env) as cm:
        for height in range(1, 51):
            cm.set_height(height)
        pg_server.stop("immediate")  # no checkpoint: recovery replays the WAL
        pg_server.start()
        cm.set_height(51)
    with ConfigManager.open(config_file, env=env) as cm:
        assert cm.get_height() == 51
        revisions = [e.revision for e in cm.get_audit(limit=1000)]
        # One row per change, in order. (The sequence may skip numbers after a crash: it logs
        # values ahead; a poller following since=REV misses nothing.)
        assert len(revisions) == 51 and revisions == sorted(set(revisions))


#: The bound the stall tests run with (API_STATE_PG_TIMEOUT), and what may come on top of it:
#: the watchdog's grace and tick, the request itself.
STALL_BOUND_S = 2.0
STALL_SLACK_S = 4.0


def test_a_stalled_server_gives_503_within_the_bound(
    durable_pg: PgServer, config_file: Path, serve_process: Serve
) -> None:
    """Reproduction: with the postmaster and its backends stopped for 30 s, writes hung the
    full 30 s and /readyz hung instead of answering 503."""
    env = {
        "API_STATE_URL": durable_pg.fresh_database(),
        "API_STATE_KEY": TEST_STATE_KEY,
        "API_STATE_PG_TIMEOUT": f"{STALL_BOUND_S:g}s",
    }
    replica = serve_process(config_file, env=env)
    assert httpx.post(f"{replica.url}{NODES}", json=node("before")).status_code == 200
    with durable_pg.frozen():
        started = time.monotonic()
        ready = httpx.get(f"{replica.url}/readyz", timeout=30)
        assert ready.status_code == 503 and time.monotonic() - started < 2.5
        assert "did not answer" in ready.json()["error"]
        started = time.monotonic()
        r = httpx.post(f"{replica.url}{NODES}", json=node("during"), timeout=60)
        assert time.monotonic() - started < STALL_BOUND_S + STALL_SLACK_S
        assert r.status_code == 503 and r.json()["code"] == "state_timeout", r.text
        assert httpx.get(f"{replica.url}/livez", timeout=5).status_code == 200
    # Resumed: writes go on without a restart, and the refused one left nothing.
    deadline = time.monotonic() + 30
    while httpx.get(f"{replica.url}/readyz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert httpx.post(f"{replica.url}{NODES}", json=node("after")).status_code == 200
    listed = {n["node"]["id"] for n in httpx.get(f"{replica.url}{NODES}").json()}
    assert listed == {"before", "after"}
    assert "Traceback" not in replica.log()


def test_a_commit_that_is_never_answered_is_reported_as_unknown(
    durable_pg: PgServer, config_file: Path
) -> None:
    """COMMIT sent and never answered (a synchronous standby that does not exist: the server
    committed locally and waits): the write is reported as of unknown outcome, neither as
    success nor as a plain failure; it did commit."""
    import psycopg

    env = {
        "API_STATE_URL": durable_pg.fresh_database(),
        "API_STATE_KEY": TEST_STATE_KEY,
        "API_STATE_PG_TIMEOUT": "1s",
    }

    def standby(names: str) -> None:
        with psycopg.connect(durable_pg.admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            admin.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous (the postmaster re-reads the file, then signals each
        # backend): wait until a new session sees it, then give the pooled ones a moment, so a
        # loaded machine does not run the write before the setting applies.
        deadline = time.monotonic() + 30
        while True:
            with psycopg.connect(durable_pg.admin_url, autocommit=True) as probe:
                row = probe.execute("SHOW synchronous_standby_names").fetchone()
            if row is not None and row[0] == names:
                break
            assert time.monotonic() < deadline, "the server did not reload its configuration"
            time.sleep(0.05)
        time.sleep(0.5)

    with ConfigManager.open(config_file, env=env) as cm:
        cm.set_height(4)
        standby("nobody")
        try:
            started = time.monotonic()
            with pytest.raises(CommitUnknownError) as err:
                cm.set_height(5)
            assert time.monotonic() - started < 1 + STALL_SLACK_S
            assert "may or may not be stored" in str(err.value)
        finally:
            standby("")
        deadline = time.monotonic() + 30
        while cm.get_height() != 5:  # it was committed: "unknown" was the truth
            assert time.monotonic() < deadline
            time.sleep(0.1)
