"""State, export, probes and metrics over a real server; 503 from real unusable-state conditions."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig, SeedInfo
from dapi_config._yaml import parse_yaml, to_plain
from dapi_config.crypto import REDACTED
from dapi_config.store import connection
from tests.api.conftest import RunningServer, StartServer
from tests.api.test_nodes import NODES, node


def test_state_route(running_server: RunningServer) -> None:
    cm = running_server.manager
    cm.add_node_version(100, "v2")
    cm.set_height(42)
    cm.set_upcoming_seed(SeedInfo(seed=7, epoch_index=3, signature="ab"))
    r = running_server.client.get("/admin/v1/state")
    assert r.status_code == 200
    body = r.json()
    assert body["height"] == 42
    assert body["current_node_version"] == ""
    assert body["node_versions"] == [{"height": 100, "version": "v2"}]
    assert body["seeds"]["upcoming"] == {
        "seed": 7,
        "epoch_index": 3,
        "signature": "ab",
        "claimed": False,
    }
    assert body["node_count"] == 0
    assert body["revision"] == cm.backend.latest_revision()
    assert body == cm.state_summary()


def test_config_export_route_is_redacted(running_server: RunningServer) -> None:
    cm = running_server.manager
    cm.create_worker_key()
    running_server.client.post(NODES, json=node("n1")).raise_for_status()
    r = running_server.client.get("/admin/v1/config/export")
    assert r.status_code == 200
    body = r.json()
    assert body["ml_node_key_config"]["worker_private"] == REDACTED
    assert body["ml_node_key_config"]["worker_public"]
    assert [n["id"] for n in body["nodes"]] == ["n1"]
    assert body == cm.export_full_config()
    secret = cm.get_ml_node_key_config().worker_private
    assert secret not in r.text

    y = running_server.client.get("/admin/v1/config/export", params={"format": "yaml"})
    assert y.status_code == 200
    assert y.headers["content-type"].startswith("application/yaml")
    assert to_plain(parse_yaml(y.text, "export")) == body
    assert secret not in y.text

    bad = running_server.client.get("/admin/v1/config/export", params={"format": "xml"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.format"


def test_probes(running_server: RunningServer) -> None:
    c = running_server.client
    assert c.get("/livez").json() == {"status": "ok"}
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "problems": []}


def test_openapi_and_docs(running_server: RunningServer) -> None:
    c = running_server.client
    spec = c.get("/openapi.json").json()
    for path in (
        "/admin/v1/nodes",
        "/admin/v1/nodes/batch",
        "/admin/v1/nodes/{node_id}",
        "/admin/v1/nodes/{node_id}/enable",
        "/admin/v1/nodes/{node_id}/disable",
        "/admin/v1/state",
        "/admin/v1/config/export",
        "/livez",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    docs = c.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_metrics_plain_route(running_server: RunningServer) -> None:
    c = running_server.client
    c.post(NODES, json=node("n1")).raise_for_status()
    c.post(f"{NODES}/batch", json=[node("n1")])  # 409
    c.get(f"{NODES}/n1")
    c.get("/wp-login.php")  # a scanner's path: one "unmatched" label, not one per path
    r = c.get("/metrics", follow_redirects=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'dapi_config_http_requests_total{method="POST",route="/admin/v1/nodes",status="200"} 1.0'
        in text
    )
    assert (
        'dapi_config_http_requests_total{method="POST",route="/admin/v1/nodes/batch",'
        'status="409"} 1.0' in text
    )
    assert 'route="/admin/v1/nodes/{node_id}",status="200"' in text
    assert 'route="unmatched",status="404"' in text
    assert "wp-login" not in text
    assert 'dapi_config_http_errors_total{status="409"} 1.0' in text
    # Two write transactions: one committed, one rolled back by the duplicate id.
    assert 'dapi_config_state_writes_total{outcome="committed"} 1.0' in text
    assert 'dapi_config_state_writes_total{outcome="failed"} 1.0' in text
    assert "dapi_config_state_write_duration_seconds_count 2.0" in text
    assert 'dapi_config_http_request_duration_seconds_count{method="GET"' in text
    assert "dapi_config_last_export_timestamp_seconds 0.0" in text
    assert "dapi_config_last_backup_timestamp_seconds 0.0" in text
    assert "process_resident_memory_bytes" in text


def test_gauges_set_by_other_parts(running_server: RunningServer) -> None:
    running_server.app.state.metrics.last_backup_timestamp.set(1234.5)
    assert (
        "dapi_config_last_backup_timestamp_seconds 1234.5"
        in running_server.client.get("/metrics").text
    )


def test_locked_state_is_503_and_reads_keep_working(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, start_server: StartServer
) -> None:
    # A real condition: another process holds the write lock longer than the busy timeout.
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_S", 0.3)
    with ConfigManager.open(config_file) as cm:
        server = start_server(cm)
        server.client.post(NODES, json=node("n1")).raise_for_status()
        holder = sqlite3.connect(cm.state_path, isolation_level=None, timeout=0)
        try:
            holder.execute("BEGIN IMMEDIATE")
            r = server.client.post(NODES, json=node("n2"))
            assert r.status_code == 503
            assert r.json()["code"] == "state_unavailable"
            assert "locked" in r.json()["error"]
            assert r.headers["retry-after"] == "5"
            r = server.client.post(f"{NODES}/n1/disable")
            assert r.status_code == 503
            # Readers are not blocked by a writer (WAL): the last committed state is served.
            listed = server.client.get(NODES)
            assert listed.status_code == 200
            assert [n["node"]["id"] for n in listed.json()] == ["n1"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The lock is gone: writes work again, and the failed ones changed nothing.
        assert server.client.post(NODES, json=node("n2")).status_code == 200
        assert [n.id for n in cm.get_nodes()] == ["n1", "n2"]
        assert cm.get_node("n1").is_enabled is True
        server.stop()


def test_readyz_503_when_state_directory_removed(
    config_file: Path, tmp_path: Path, start_server: StartServer
) -> None:
    state_dir = tmp_path / "state"
    with ConfigManager.open(config_file, state_dir / "state.db") as cm:
        server = start_server(cm)
        assert server.client.get("/readyz").status_code == 200
        shutil.rmtree(state_dir)
        r = server.client.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["code"] == "not_ready"
        assert body["problems"] == [
            f"{state_dir / 'state.db'}: the state file was removed while the service runs; "
            "restart it"
        ]
        assert server.client.get("/livez").status_code == 200  # the process is still up
        server.stop()


def test_readyz_503_when_state_file_replaced(
    config_file: Path, tmp_path: Path, start_server: StartServer
) -> None:
    with ConfigManager.open(config_file) as cm:
        server = start_server(cm)
        impostor = tmp_path / "other.db"
        impostor.write_bytes(b"not a database")
        os.replace(impostor, cm.state_path)
        r = server.client.get("/readyz")
        assert r.status_code == 503
        assert "replaced" in r.json()["problems"][0]
        server.stop()


# --- /readyz says what the next write or restart would meet (hardening) -----------------------


def test_readyz_503_when_the_file_is_damaged_in_place(running_server: RunningServer) -> None:
    """Seen on main: every write and GET /admin/v1/state answered 503 "damaged" while
    /readyz said ready."""
    client = running_server.client
    cm = running_server.manager
    for i in range(50):
        cm.add_node(InferenceNodeConfig.model_validate({**node(f"n{i}"), "version": "v" * 200}))
    with connection.sqlite3.connect(cm.state_path) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    size = cm.state_path.stat().st_size
    with open(cm.state_path, "r+b") as handle:  # in place: same inode, pages past the first
        handle.seek(4096)
        handle.write(os.urandom(size - 4096))
    assert client.get("/admin/v1/nodes").status_code == 503
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert "damaged" in ready.text
    # What was found stays reported (no quick_check at every probe): the fix is a restart.
    again = client.get("/readyz")
    assert again.status_code == 503 and "a restart recovers it" in again.text


def test_readyz_503_when_the_header_is_overwritten(running_server: RunningServer) -> None:
    cm = running_server.manager
    cm.set_height(5)
    with open(cm.state_path, "r+b") as handle:
        handle.write(b"garbage, not SQLite at all")
    ready = running_server.client.get("/readyz")
    assert ready.status_code == 503 and "header" in ready.text


def test_readyz_503_when_the_key_file_is_deleted(running_server: RunningServer) -> None:
    client = running_server.client
    assert client.post(NODES, json=node("n1")).status_code == 200
    assert client.post(f"{NODES}/n1/security-key").status_code == 201
    key_file = Path(f"{running_server.manager.state_path}.key")
    assert client.get("/readyz").status_code == 200
    aside = key_file.with_name("key.aside")
    key_file.rename(aside)
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and str(key_file) in ready.text
    finally:
        aside.rename(key_file)
    assert client.get("/readyz").status_code == 200


def test_metrics_have_no_created_series(running_server: RunningServer) -> None:
    """Seen on main: every counter also exported a ``_created`` series."""
    running_server.client.get("/livez")
    text = running_server.client.get("/metrics").text
    assert "dapi_config_http_requests_total" in text
    assert "_created" not in text


def test_docs_pages_need_no_internet(running_server: RunningServer) -> None:
    """Seen on main: /docs and /redoc loaded swagger-ui and redoc from a CDN and fonts from
    Google, an empty page on an air-gapped node. Every asset they name is served here."""
    import re

    client = running_server.client
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        assert "://" not in html.text, re.findall(r"\S*://\S*", html.text)
        # The browser may load nothing from elsewhere (the bundles name a few outside URLs).
        assert html.headers["content-security-policy"].startswith("default-src 'self'; ")
        assets = re.findall(r"""(?:src|href)=["']?(/[^"'\s>]+)""", html.text)
        assert assets, page
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 100, asset
    script = client.get("/docs-assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in script
