"""``dapi-config restore`` beside a running, probed and written-to ``serve``: every process
sees the restored state, nobody undoes it, and watchers wake (reproduction: the service served
the restored nodes, but once it stopped the file held the pre-restore state plus its new
writes; a watcher at the last revision never woke)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import ServeProcess
from tests.conftest import run_cli

NODE = {"host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080, "models": {}}


def _ids(client: httpx.Client) -> list[str]:
    return [n["node"]["id"] for n in client.get("/admin/v1/nodes").json()]


def test_a_restore_beside_serve_is_seen_by_all_and_kept(
    config_file: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process(config_file)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in (1, 2, 3):
            assert client.post("/admin/v1/nodes", json={"id": f"n{i}", **NODE}).status_code == 200
            assert client.get("/readyz").status_code == 200
        backup = client.post("/admin/v1/backups").json()
        for i in (4, 5):
            assert client.post("/admin/v1/nodes", json={"id": f"n{i}", **NODE}).status_code == 200
        latest = client.get("/admin/v1/audit", params={"since": 0}).json()["latest_revision"]

        woke: list[Any] = []
        watcher = threading.Thread(
            target=lambda: woke.append(
                httpx.get(
                    f"{server.url}/admin/v1/audit",
                    params={"since": latest, "wait": 30},
                    timeout=60,
                ).json()
            )
        )
        watcher.start()
        restored = run_cli("--config", str(config_file), "restore", backup["path"])
        assert restored.returncode == 0, restored.stderr
        watcher.join(60)
        (entry,) = woke[0]["entries"]
        assert entry["revision"] == latest + 1 and entry["action"] == "restore"

        assert client.get("/readyz").status_code == 200
        assert _ids(client) == ["n1", "n2", "n3"]
        assert client.post("/admin/v1/nodes", json={"id": "n6", **NODE}).status_code == 200
        added = run_cli(
            "--config",
            str(config_file),
            "nodes",
            "add",
            "-",
            input=json.dumps({"id": "n7", **NODE}),
        )
        assert added.returncode == 0, added.stderr
        assert _ids(client) == ["n1", "n2", "n3", "n6", "n7"]
    assert server.terminate() == 0

    conn = sqlite3.connect(config_file.parent / "state.db")
    try:
        stored = [r[0] for r in conn.execute("SELECT id FROM inference_nodes ORDER BY position")]
        revisions = [r[0] for r in conn.execute("SELECT revision FROM audit_log ORDER BY rowid")]
    finally:
        conn.close()
    assert stored == ["n1", "n2", "n3", "n6", "n7"]
    assert revisions == list(range(1, len(revisions) + 1))
