"""The console's page, its assets and headers, the overview route behind its health strip, and
the cross-origin guard that keeps another site's page from changing the state (CSRF).
The page itself in a browser: test_console_browser.py."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.api import create_app
from dapi_config.export import export_once
from tests.api.conftest import RunningServer, serve_app

TOKEN = "console-unit-token-8c2d"


def _node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(
        id=node_id, host="10.0.0.1", inference_port=5000, poc_port=8080, max_concurrent=2
    )


@pytest.fixture
def guarded(config_file: Path) -> RunningServer:
    cm = ConfigManager.open(config_file, env={"DAPI_API__ADMIN_TOKEN": TOKEN})
    server = serve_app(create_app(cm), cm)
    yield server
    server.stop()
    cm.close()


@pytest.mark.parametrize("path", ["/", "/console"])
def test_the_page_is_served_with_a_strict_policy_and_no_inline_script(
    running_server: RunningServer, path: str
) -> None:
    response = running_server.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # every script is a file
    assert re.findall(r"\son\w+=", html) == []  # no inline event handlers
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere


def test_assets_ship_in_the_package_and_nothing_else_is_served(
    running_server: RunningServer,
) -> None:
    client = running_server.client
    script = client.get("/console/static/console.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "fetch(" in script.text and "http" + "s://" not in script.text
    style = client.get("/console/static/console.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert "@import" not in style.text and "url(" not in style.text  # no web fonts, no CDN
    for probe in ("../__init__.py", "console.html", "x.js"):
        missing = client.get(f"/console/static/{probe}")
        assert missing.status_code == 404, probe
    # The icon browsers ask for first: served, not a 404 in their console and our log.
    for path in ("/favicon.ico", "/console/static/favicon.svg"):
        icon = client.get(path)
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert icon.text.startswith("<svg") and "http" + "s://" not in icon.text


def test_load_balancers_probe_with_head(running_server: RunningServer) -> None:
    """HEAD on each probe answers as GET does, without the body (it was 405)."""
    for path in ("/livez", "/healthz", "/readyz"):
        got, head = running_server.client.get(path), running_server.client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == "application/json"
    documented = running_server.client.get("/openapi.json").json()["paths"]["/readyz"]
    assert list(documented) == ["get"]


def test_without_a_token_the_page_carries_the_serve_warning(
    running_server: RunningServer,
) -> None:
    html = running_server.client.get("/").text
    assert 'data-token-required="false"' in html
    assert "has no admin token" in html and "DAPI_API__ADMIN_TOKEN" in html


def test_with_a_token_the_page_asks_for_it_and_holds_no_state(guarded: RunningServer) -> None:
    guarded.manager.add_node(_node("secret-node-name"))
    html = httpx.get(guarded.url + "/").text  # no token sent: the page is public
    assert 'data-token-required="true"' in html and "has no admin token" not in html
    assert "secret-node-name" not in html and TOKEN not in html
    overview = httpx.get(guarded.url + "/admin/v1/overview")
    assert overview.status_code == 401  # the data is behind the token


def test_the_overview_says_what_the_strip_shows(running_server: RunningServer) -> None:
    cm = running_server.manager
    client = running_server.client
    first = client.get("/admin/v1/overview").json()
    assert first["ready"] is True and first["problems"] == []
    assert first["last_backup_at"] is None and first["last_export_at"] is None
    assert first["next_version"] is None and first["backend"] == "sqlite"
    cm.set_height(100)
    cm.add_node_version(300, "v3")
    cm.add_node_version(200, "v2-first")
    cm.add_node_version(200, "v2-second")
    cm.add_node(_node("a"))
    before = time.time()
    cm.backup()
    export_once(cm)
    data = client.get("/admin/v1/overview").json()
    assert data["height"] == 100 and data["node_count"] == 1
    assert data["next_version"] == {"height": 200, "version": "v2-first"}
    assert data["last_backup_at"] >= before - 1 and data["last_export_at"] >= before - 1
    assert data["state_location"] == str(cm.state_path)
    assert data["revision"] == cm.latest_revision()


def test_the_overview_reports_problems_and_still_answers(running_server: RunningServer) -> None:
    key_file = Path(f"{running_server.manager.state_path}.key")
    running_server.manager.create_worker_key()  # a sealed secret: the key file matters
    key_file.unlink()
    data = running_server.client.get("/admin/v1/overview").json()
    assert data["ready"] is False and any("key" in p for p in data["problems"])


# -- cross-origin writes (CSRF) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port on the same host is another origin
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
    ],
)
def test_a_write_from_another_origin_is_refused_and_changes_nothing(
    running_server: RunningServer, headers: dict[str, str]
) -> None:
    client = running_server.client
    body = _node("csrf").model_dump(mode="json")
    response = client.post("/admin/v1/nodes", json=body, headers=headers)
    assert response.status_code == 403
    assert response.json()["code"] == "cross_origin"
    assert client.post("/admin/v1/backups", headers=headers).status_code == 403
    assert running_server.manager.get_nodes() == []
    assert running_server.manager.list_backups() == []


def test_a_form_on_another_site_cannot_disable_a_node(running_server: RunningServer) -> None:
    """Reproduction: with no token configured, a page anywhere on the web could make the
    operator's browser POST a bodiless form to ``/nodes/{id}/disable`` (a simple request: no
    preflight) and the node was disabled. The browser's own headers now refuse it."""
    running_server.manager.add_node(_node("victim"))
    form_post = {
        "Origin": "https://attacker.example",
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    response = running_server.client.post("/admin/v1/nodes/victim/disable", headers=form_post)
    assert response.status_code == 403
    assert running_server.manager.get_nodes()[0].is_enabled


def test_same_origin_and_non_browser_writes_pass(running_server: RunningServer) -> None:
    client = running_server.client
    own = running_server.url
    cases = [
        {},  # curl, scripts, the predecessor's tools: no browser headers at all
        {"Origin": own, "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar by the user
        # Behind a TLS-terminating proxy: the browser says same-origin, its Origin says https.
        {"Origin": "https://" + own.partition("://")[2], "Sec-Fetch-Site": "same-origin"},
        {"Origin": own},  # an older browser that sends only Origin
    ]
    for n, headers in enumerate(cases):
        body = _node(f"ok-{n}").model_dump(mode="json")
        assert client.post("/admin/v1/nodes", json=body, headers=headers).status_code == 200
    # Reads are never refused: they change nothing.
    read = client.get("/admin/v1/nodes", headers={"Sec-Fetch-Site": "cross-site"})
    assert read.status_code == 200
