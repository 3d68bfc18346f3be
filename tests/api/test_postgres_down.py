"""PostgreSQL stopped under a running replica: writes fail with 503 (nothing half-done),
``/readyz`` says 503, hot reads keep serving the last values; when the server is back, writes
resume on their own. An immediate (crash-like) server restart loses no acknowledged change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dapi_config import ConfigManager, StateUnavailableError
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
