"""The running service finds damage itself (reproduction: bytes overwritten inside a page
while serve ran left /readyz at 200, and the next write was acknowledged into the damaged file,
then lost when the next start recovered the last backup)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from dapi_config import ConfigManager
from dapi_config.health import IntegrityChecker, Readiness
from tests.api.conftest import ServeProcess, StartServer
from tests.api.test_nodes import NODES, node


def _damage_an_index_page(state: Path) -> None:
    """Checkpoint, then overwrite the page type byte of the node-version index's root page in
    place (same inode): a page no node read or write touches, so only a check notices."""
    raw = sqlite3.connect(state)
    try:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = raw.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'node_versions_by_height'"
        ).fetchone()
        (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    finally:
        raw.close()
    with open(state, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xff\xff\xff\xff")


def test_damage_found_by_the_check_fails_readiness_and_refuses_writes(
    manager: ConfigManager, start_server: StartServer
) -> None:
    for height in range(10, 20):
        manager.add_node_version(height, f"v{height}")
    readiness = Readiness(manager)
    checker = IntegrityChecker(manager.backend, interval=3600)  # type: ignore[arg-type]
    readiness.integrity = checker
    server = start_server(manager, readiness=readiness)
    assert checker.run_once().ok is True
    ready = server.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["integrity"]["ok"] is True

    _damage_an_index_page(manager.state_path)
    assert server.client.post(NODES, json=node("unnoticed")).status_code == 200  # as before

    found = checker.run_once()
    assert found.ok is False and found.problems
    ready = server.client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["integrity"]["ok"] is False and "integrity check" in ready.text
    refused = server.client.post(NODES, json=node("refused"))
    assert refused.status_code == 503 and "writes are refused" in refused.json()["error"]
    assert [n.id for n in manager.get_nodes()] == ["unnoticed"]
    overview = server.client.get("/admin/v1/overview").json()
    assert overview["integrity_ok"] is False and overview["integrity_checked_at"] > 0


def test_serve_checks_at_start_and_reports_it(
    config_file: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process(config_file, env={"API_INTEGRITY_CHECK_INTERVAL": "1s"})
    deadline = time.monotonic() + 30
    while (integrity := httpx.get(f"{server.url}/readyz").json().get("integrity")) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert integrity["ok"] is True and integrity["problems"] == []
    first = integrity["checked_at"]
    while httpx.get(f"{server.url}/readyz").json()["integrity"]["checked_at"] == first:
        assert time.monotonic() < deadline  # and again a second later
        time.sleep(0.1)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "dapi_config_integrity_check_ok 1.0" in metrics
    assert "dapi_config_integrity_check_timestamp_seconds 1." in metrics
    assert server.terminate() == 0
