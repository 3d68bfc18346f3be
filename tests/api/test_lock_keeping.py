"""A probed, watched and backed-up ``serve`` keeps its locks, so CLI commands beside it never
delete its ``-wal`` (reproduction: one ``GET /readyz`` made the next ``nodes list`` checkpoint
and unlink ``state.db-wal`` under the service; the ``nodes add`` after it answered 0, was never
seen by the service and was gone once it stopped)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx

from tests._locks import assert_holds_locks
from tests.api.conftest import ServeProcess
from tests.conftest import run_cli

NODE = {"host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080, "models": {}}


def _cli(config: Path, *args: str, stdin: str | None = None) -> str:
    result = run_cli("--config", str(config), *args, input=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_probes_and_cli_commands_beside_serve_lose_nothing(
    config_file: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    state = config_file.parent / "state.db"
    server = serve_process(config_file)
    pid = server.proc.pid
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/admin/v1/nodes", json={"id": "api-1", **NODE}).status_code == 200
        assert_holds_locks(pid, state, "a write")
        # Every request that reads the state or its files.
        for method, route in [
            ("GET", "/readyz"),
            ("GET", "/admin/v1/overview"),
            ("GET", "/metrics"),
            ("POST", "/admin/v1/backups"),
            ("GET", "/admin/v1/backups"),
            ("GET", "/admin/v1/config/export"),
            ("GET", "/admin/v1/export/db"),
            ("GET", "/readyz"),
        ]:
            assert client.request(method, route).status_code < 300, route
            assert_holds_locks(pid, state, f"{method} {route}")
        wal = os.stat(f"{state}-wal").st_ino

        # The CLI beside it: reads, a check, and writes.
        _cli(config_file, "nodes", "list", "--json")
        assert_holds_locks(pid, state, "a CLI read")
        run_cli("--config", str(config_file), "check")  # its verdict (backup age) is not the point
        _cli(config_file, "nodes", "add", "-", stdin=json.dumps({"id": "cli-1", **NODE}))
        assert os.stat(f"{state}-wal").st_ino == wal, "the -wal was replaced under the service"
        assert client.get("/readyz").status_code == 200
        _cli(config_file, "nodes", "list", "--json")

        # The service sees the CLI's write, and its own next write lands in the same file.
        ids = [n["node"]["id"] for n in client.get("/admin/v1/nodes").json()]
        assert ids == ["api-1", "cli-1"]
        assert client.post("/admin/v1/nodes", json={"id": "api-2", **NODE}).status_code == 200
    assert server.terminate() == 0

    conn = sqlite3.connect(state)
    try:
        stored = [r[0] for r in conn.execute("SELECT id FROM inference_nodes ORDER BY position")]
        revisions = [r[0] for r in conn.execute("SELECT revision FROM audit_log")]
    finally:
        conn.close()
    assert stored == ["api-1", "cli-1", "api-2"]
    assert revisions == sorted(set(revisions))
