"""Admin token, security-key routes and the audit route over a real server; the real ``serve``
process keeps secrets out of its log and refuses to start with a wrong master key."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dapi_config import ConfigManager
from dapi_config.api import ADMIN_PREFIX
from tests.api.conftest import RunningServer, ServeProcess, StartServer
from tests.conftest import EXAMPLE_CONFIG, run_cli

pytestmark = pytest.mark.both_backends

TOKEN = "s3cr3t-admin-token-for-tests-0123456789"
NODE = {"id": "n1", "host": "10.0.0.1", "inference_port": 5000, "poc_port": 8080}
OPEN_PATHS = ("/livez", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")


def _config_with_token(directory: Path, token: str = TOKEN) -> Path:
    path = directory / "config.yaml"
    path.write_text(
        EXAMPLE_CONFIG.replace(
            "  admin_server_port: 9200\n", f"  admin_server_port: 9200\n  admin_token: {token}\n"
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def guarded(tmp_path: Path, start_server: StartServer) -> Iterator[RunningServer]:
    """A server whose config sets api.admin_token."""
    with ConfigManager.open(_config_with_token(tmp_path)) as cm:
        yield start_server(cm)


def _admin_routes(server: RunningServer) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves under /admin/v1, path parameters filled in.

    Read from the app's own OpenAPI document (what FastAPI generates from the mounted routes),
    so routes added later are covered without touching this test.
    """
    routes = []
    for path, operations in server.app.openapi()["paths"].items():
        if path.startswith(ADMIN_PREFIX):
            concrete = re.sub(r"\{[^}]+\}", "n1", path)
            routes.extend((method.upper(), concrete) for method in operations)
    return routes


def test_every_admin_route_needs_the_token(guarded: RunningServer) -> None:
    routes = _admin_routes(guarded)
    paths = {p for _, p in routes}
    # The enumeration sees the routes of every area (so a new router is covered automatically).
    for expected in ("/nodes", "/nodes/n1/security-key/rotate", "/audit", "/backups", "/state"):
        assert ADMIN_PREFIX + expected in paths
    c = guarded.client
    for method, path in routes:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": "Bearer"},
            {"X-Admin-Token": TOKEN},
        ):
            r = c.request(method, path, headers=headers, json=NODE)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.json()["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in r.text
    assert guarded.manager.get_nodes() == []  # nothing got through
    assert guarded.manager.latest_revision() == 0


def test_the_right_token_is_accepted_everywhere(guarded: RunningServer) -> None:
    c = guarded.client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert c.post(f"{ADMIN_PREFIX}/nodes", json=NODE, headers=auth).status_code == 200
    for method, path in _admin_routes(guarded):
        r = c.request(method, path, headers=auth, json=NODE)
        assert r.status_code != 401, (method, path)


def test_probes_and_metrics_stay_open(guarded: RunningServer) -> None:
    for path in OPEN_PATHS:
        assert guarded.client.get(path).status_code == 200, path


def test_without_the_token_nothing_is_parsed_or_revealed(guarded: RunningServer) -> None:
    c = guarded.client
    for method, path, body, content_type in (
        ("GET", f"{ADMIN_PREFIX}/no-such-thing", b"", "application/json"),
        ("GET", ADMIN_PREFIX, b"", "application/json"),
        ("POST", f"{ADMIN_PREFIX}/nodes", b"{not json", "application/json"),
        ("POST", f"{ADMIN_PREFIX}/nodes", b"a=b", "application/x-www-form-urlencoded"),
        ("GET", f"{ADMIN_PREFIX}/audit?limit=abc", b"", "application/json"),
        ("POST", f"{ADMIN_PREFIX}/nodes/bad%20id/security-key", b"", "application/json"),
    ):
        r = c.request(method, path, content=body, headers={"Content-Type": content_type})
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json() == {"error": r.json()["error"], "code": "unauthorized"}
    auth = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive (RFC 7235)
    assert c.get(f"{ADMIN_PREFIX}/no-such-thing", headers=auth).status_code == 404
    bad = c.post(
        f"{ADMIN_PREFIX}/nodes",
        content=b"{not json",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert bad.status_code == 400


def test_token_from_the_environment(tmp_path: Path, start_server: StartServer) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(EXAMPLE_CONFIG)
    config.chmod(0o600)
    with ConfigManager.open(config, env={"DAPI_API__ADMIN_TOKEN": TOKEN}) as cm:
        server = start_server(cm)
        assert server.client.get(f"{ADMIN_PREFIX}/nodes").status_code == 401
        ok = server.client.get(
            f"{ADMIN_PREFIX}/nodes", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status_code == 200


def test_without_a_token_the_admin_api_is_open(running_server: RunningServer) -> None:
    assert running_server.client.get(f"{ADMIN_PREFIX}/nodes").status_code == 200


def test_openapi_documents_the_bearer_scheme(guarded: RunningServer) -> None:
    doc = guarded.client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            secured = {"adminToken": []} in operation.get("security", [])
            assert secured == path.startswith(ADMIN_PREFIX), path


# --- security keys ----------------------------------------------------------------------------


def test_security_key_routes(running_server: RunningServer) -> None:
    c, cm = running_server.client, running_server.manager
    base = f"{ADMIN_PREFIX}/nodes/n1/security-key"
    assert c.post(base).status_code == 404  # no such node
    c.post(f"{ADMIN_PREFIX}/nodes", json=NODE)
    assert c.post(f"{base}/rotate").json()["code"] == "security_key_not_found"
    assert c.get(base).status_code == 404

    created = c.post(base)
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    key1 = created.json()["security_key"]
    assert created.json()["key_version"] == 1
    conflict = c.post(base)
    assert conflict.status_code == 409 and conflict.json()["code"] == "security_key_exists"

    rotated = c.post(f"{base}/rotate")
    assert rotated.status_code == 200 and rotated.json()["key_version"] == 2
    key2 = rotated.json()["security_key"]
    assert not cm.verify_security_key("n1", key1) and cm.verify_security_key("n1", key2)

    info = c.get(base)
    assert info.status_code == 200
    assert info.json()["key_version"] == 2 and "security_key" not in info.json()
    listed = c.get(f"{ADMIN_PREFIX}/security-keys").json()
    assert [i["node_id"] for i in listed] == ["n1"]
    for read in (
        info.text,
        c.get(f"{ADMIN_PREFIX}/nodes/n1").text,
        c.get(f"{ADMIN_PREFIX}/state").text,
    ):
        assert key1 not in read and key2 not in read
    export = c.get(f"{ADMIN_PREFIX}/config/export")
    assert export.status_code == 200 and key2 not in export.text

    assert c.post(f"{ADMIN_PREFIX}/nodes/bad id!/security-key").status_code == 422
    deleted = c.delete(base)
    assert deleted.status_code == 200 and deleted.json()["key_version"] == 2
    assert not cm.verify_security_key("n1", key2)

    c.post(base)
    c.delete(f"{ADMIN_PREFIX}/nodes/n1")  # removing the node removes its key
    assert cm.backend.security_key("n1") is None


def test_api_writes_are_audited_as_api(running_server: RunningServer) -> None:
    c, cm = running_server.client, running_server.manager
    base = f"{ADMIN_PREFIX}/nodes/n1"
    for method, path in (
        ("POST", f"{ADMIN_PREFIX}/nodes"),
        ("POST", f"{base}/security-key"),
        ("POST", f"{base}/security-key/rotate"),
        ("DELETE", f"{base}/security-key"),
        ("POST", f"{base}/disable"),
        ("PUT", base),
        ("DELETE", base),
    ):
        before = cm.latest_revision()
        r = c.request(method, path, json=NODE)
        assert r.status_code < 300, (method, path, r.text)
        rows = cm.get_audit(since=before)
        assert [row.actor for row in rows] == ["api"], (method, path)


# --- the audit route --------------------------------------------------------------------------


def test_audit_route_pages_by_revision(running_server: RunningServer) -> None:
    c, cm = running_server.client, running_server.manager
    for height in range(1, 26):
        cm.set_height(height)
    seen: list[int] = []
    since = 0
    while True:
        page = c.get(f"{ADMIN_PREFIX}/audit", params={"since": since, "limit": 10}).json()
        assert page["latest_revision"] == 25
        if not page["entries"]:
            break
        seen += [e["revision"] for e in page["entries"]]
        since = page["next_since"]
    assert seen == list(range(1, 26))
    entry = c.get(f"{ADMIN_PREFIX}/audit", params={"since": 24}).json()["entries"][0]
    assert entry == {
        "revision": 25,
        "at": entry["at"],
        "actor": "library",
        "action": "set_height",
        "target": "current_height",
        "old_value": 24,
        "new_value": 25,
        "undone_by": None,
    }
    for bad in ({"since": -1}, {"limit": 0}, {"limit": 1001}, {"since": "x"}):
        r = c.get(f"{ADMIN_PREFIX}/audit", params=bad)
        assert r.status_code == 422 and r.json()["code"] == "validation_error"


# --- the real service -------------------------------------------------------------------------


def test_serve_log_holds_no_secret(
    tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    config = _config_with_token(tmp_path)
    env = {"API_STATE_KEY": "a-passphrase-of-decent-length", "CONFIG_EXPORT_INTERVAL": "0"}
    proc = serve_process(config, env=env)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    secrets = [TOKEN, env["API_STATE_KEY"]]
    with httpx.Client(base_url=proc.url, headers=auth, timeout=60) as c:
        for i in range(3):
            assert c.post(f"{ADMIN_PREFIX}/nodes", json={**NODE, "id": f"n{i}"}).status_code == 200
            secrets.append(c.post(f"{ADMIN_PREFIX}/nodes/n{i}/security-key").json()["security_key"])
        secrets.append(
            c.post(f"{ADMIN_PREFIX}/nodes/n0/security-key/rotate").json()["security_key"]
        )
        assert (
            c.get(f"{ADMIN_PREFIX}/audit", headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        c.get(f"{ADMIN_PREFIX}/config/export")
        c.delete(f"{ADMIN_PREFIX}/nodes/n2")
        c.post(f"{ADMIN_PREFIX}/backups")
    export = run_cli("--config", str(config), "export", "--out", str(tmp_path / "e.yaml"), env=env)
    assert export.returncode == 0, export.stderr
    assert proc.terminate() == 0
    log = proc.log()
    assert "state change" in log and "master key from API_STATE_KEY" in log
    for secret in secrets:
        assert secret not in log
        assert secret not in (tmp_path / "e.yaml").read_text()
    for backup in (tmp_path / "backups").glob("*.db"):
        assert not any(s.encode() in backup.read_bytes() for s in secrets)


def test_serve_warns_once_about_a_readable_config(
    tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    config = _config_with_token(tmp_path)
    config.chmod(0o644)
    proc = serve_process(config, env={"CONFIG_EXPORT_INTERVAL": "0"})
    assert proc.terminate() == 0
    assert proc.log().count("readable by group/others") == 1


def test_serve_refuses_a_wrong_master_key(tmp_path: Path) -> None:
    config = _config_with_token(tmp_path)
    with ConfigManager.open(config, env={"API_STATE_KEY": "the-right-passphrase-1"}) as cm:
        cm.create_worker_key()
    result = run_cli(
        "--config",
        str(config),
        "serve",
        "--port",
        "1",
        env={"API_STATE_KEY": "the-wrong-passphrase-2"},
    )
    assert result.returncode == 1
    assert "does not open" in result.stderr
    assert "the-wrong-passphrase-2" not in result.stderr
