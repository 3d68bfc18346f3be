"""Reading the past and point-in-time recovery over HTTP (SPEC §10): ``GET /state?revision=``,
``GET /nodes?revision=`` and ``POST /restore``, on the real server."""

from __future__ import annotations

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.api import ServiceMetrics
from dapi_config.health import Readiness, TrailChecker
from tests.api.conftest import RunningServer, StartServer
from tests.conftest import raw_execute

pytestmark = pytest.mark.both_backends

ADMIN = "/admin/v1"


def _node(node_id: str, host: str = "10.0.0.5") -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host=host, inference_port=5000, poc_port=8080)


def test_reading_the_past_over_http(running_server: RunningServer) -> None:
    cm, client = running_server.manager, running_server.client
    cm.add_node(_node("a"))
    cm.set_height(10)
    then = cm.latest_revision()
    cm.update_node(_node("a", "10.9.9.9"))
    cm.set_height(20)
    cm.add_node(_node("b"))
    past = client.get(f"{ADMIN}/state", params={"revision": then})
    assert past.status_code == 200 and "ETag" not in past.headers
    assert past.json()["height"] == 10 and past.json()["revision"] == then
    nodes = client.get(f"{ADMIN}/nodes", params={"revision": then}).json()
    assert [(n["node"]["id"], n["node"]["host"]) for n in nodes] == [("a", "10.0.0.5")]
    # Bad revisions: one clear answer, nothing changed.
    missing = client.get(f"{ADMIN}/state", params={"revision": 999})
    assert missing.status_code == 404 and missing.json()["code"] == "revision_not_found"
    assert client.get(f"{ADMIN}/nodes", params={"revision": -1}).status_code == 422
    # Point-in-time recovery: a dry run says what, the restore does it.
    dry = client.post(f"{ADMIN}/restore", json={"revision": then, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["revision"] is None
    assert "node b: removed" in dry.json()["changes"]
    assert cm.get_height() == 20
    done = client.post(f"{ADMIN}/restore", json={"revision": then})
    assert done.status_code == 200, done.text
    assert done.json()["restored_revision"] == then
    assert cm.get_height() == 10 and [n.host for n in cm.get_nodes()] == ["10.0.0.5"]
    both = client.post(f"{ADMIN}/restore", json={"revision": 1, "time": "2026-01-01T00:00:00Z"})
    assert both.status_code == 422
    naive = client.post(f"{ADMIN}/restore", json={"time": "2026-01-01T00:00:00"})
    assert naive.status_code == 422
    early = client.post(f"{ADMIN}/restore", json={"time": "2000-01-01T00:00:00Z"})
    assert early.status_code == 200 and early.json()["restored_revision"] == 0
    assert cm.get_nodes() == [] and cm.get_height() == 0


def test_the_periodic_trail_check_reports_a_value_changed_under_the_trail(
    manager: ConfigManager, start_server: StartServer
) -> None:
    """``serve`` checks the trail every API_DEEP_CHECK_INTERVAL: a difference shows in the
    overview and on /metrics (an alert rule ships for it); readiness is not failed."""
    manager.add_node(_node("a"))
    metrics = ServiceMetrics()
    readiness = Readiness(manager)
    checker = TrailChecker(manager, interval=3600, on_result=metrics.observe_trail)
    readiness.trail = checker
    server = start_server(manager, readiness=readiness, service_metrics=metrics)
    assert checker.run_once().ok is True
    view = server.client.get(f"{ADMIN}/overview").json()
    assert view["trail_ok"] is True and view["trail_problems"] == []
    assert "dapi_config_trail_check_ok 1.0" in server.client.get("/metrics").text

    raw_execute(manager, "UPDATE inference_nodes SET host = '203.0.113.9'")
    found = checker.run_once()
    assert found.ok is False
    view = server.client.get(f"{ADMIN}/overview").json()
    assert view["trail_ok"] is False and "node:a" in view["trail_problems"][0]
    assert "dapi_config_trail_check_ok 0.0" in server.client.get("/metrics").text
    assert server.client.get("/readyz").status_code == 200
