"""``POST/GET /admin/v1/backups`` and the scheduled backups of ``dapi-config serve``, on both
backends (a PostgreSQL state is backed up to SQLite snapshot files, SPEC §13)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dapi_config import ConfigManager
from dapi_config.store.backup import inspect_backup
from tests.api.conftest import RunningServer, ServeProcess, free_port
from tests.conftest import run_cli

pytestmark = pytest.mark.both_backends


def test_post_takes_a_verified_backup_and_get_lists_it(running_server: RunningServer) -> None:
    client = running_server.client
    running_server.manager.set_height(77)
    made = client.post("/admin/v1/backups")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["ok"] is True and body["revision"] == 1 and body["reason"] == "manual"
    assert inspect_backup(body["path"]).ok
    listed = client.get("/admin/v1/backups")
    assert listed.status_code == 200
    assert [b["path"] for b in listed.json()] == [body["path"]]
    metrics = client.get("/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("dapi_config_last_backup_"))
    assert float(line.split()[-1]) > 0


def test_backup_failure_is_503_with_the_product_body(running_server: RunningServer) -> None:
    manager = running_server.manager
    manager.set_height(1)
    blocker = manager.backup_dir
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the backup directory should be")
    res = running_server.client.post("/admin/v1/backups")
    assert res.status_code == 503
    assert res.json()["code"] == "backup_error" and "backup" in res.json()["error"]
    assert manager.get_height() == 1


def test_backups_route_is_in_openapi(running_server: RunningServer) -> None:
    paths = running_server.client.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/admin/v1/backups"])


def test_serve_takes_scheduled_backups_and_keeps_only_the_newest(
    config_file: Path, serve_process: Callable[..., ServeProcess], state_env: dict[str, str]
) -> None:
    with ConfigManager.open(config_file, env=state_env) as cm:
        cm.set_height(5)
        backup_dir = cm.backup_dir
    server = serve_process(
        config_file, env={**state_env, "API_BACKUP_INTERVAL": "0.2s", "API_BACKUP_KEEP": "2"}
    )
    try:
        seen: set[str] = set()
        for _ in range(600):  # bounded wait (up to ~60 s on a loaded machine)
            listed = httpx.get(f"{server.url}/admin/v1/backups", timeout=30).json()
            seen |= {b["path"] for b in listed}
            if len(seen) >= 4:
                break
            time.sleep(0.1)
        assert len(seen) >= 4, server.log()
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert "dapi_config_last_backup_timestamp_seconds 0.0" not in metrics
    finally:
        assert server.terminate() == 0, server.log()
    left = [p for p in backup_dir.iterdir() if p.name.endswith("-scheduled.db")]
    assert 1 <= len(left) <= 2
    assert all(inspect_backup(p).ok for p in left)


def test_serve_refuses_a_bad_backup_interval(config_file: Path) -> None:
    res = run_cli(
        "--config",
        str(config_file),
        "serve",
        "--port",
        str(free_port()),
        env={"API_BACKUP_INTERVAL": "often"},
    )
    assert res.returncode == 1 and "API_BACKUP_INTERVAL" in res.stderr
    assert "Traceback" not in res.stderr
