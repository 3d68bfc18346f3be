"""Watching the audit trail: ``GET /admin/v1/audit?since=REV&wait=SECONDS`` answers as soon as
a newer revision commits, and ``dapi-config audit --follow`` prints changes as they commit; on
both backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig, ValidationError
from tests.api.conftest import RunningServer


def _node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host="10.0.0.1", inference_port=5000, poc_port=8080)


pytestmark = pytest.mark.both_backends

AUDIT = "/admin/v1/audit"


def test_wait_answers_when_a_change_commits(running_server: RunningServer) -> None:
    c, cm = running_server.client, running_server.manager
    cm.set_height(1)
    writer = threading.Timer(0.3, lambda: cm.set_height(2))
    writer.start()
    start = time.monotonic()
    r = c.get(AUDIT, params={"since": 1, "wait": 20})
    elapsed = time.monotonic() - start
    writer.join()
    assert r.status_code == 200
    body = r.json()
    assert [e["revision"] for e in body["entries"]] == [2]
    assert body["next_since"] == 2 and body["latest_revision"] == 2
    assert elapsed < 15  # it answered on the commit, not at the end of the wait


def test_wait_without_a_change_returns_empty(running_server: RunningServer) -> None:
    c = running_server.client
    running_server.manager.set_height(1)
    r = c.get(AUDIT, params={"since": 1, "wait": 0.2})
    assert r.status_code == 200
    assert r.json() == {"entries": [], "next_since": 1, "latest_revision": 1}
    # An entry already there is returned at once, whatever the wait.
    r = c.get(AUDIT, params={"since": 0, "wait": 30})
    assert [e["revision"] for e in r.json()["entries"]] == [1]
    for bad in ("-1", "61", "soon"):
        assert c.get(AUDIT, params={"wait": bad}).status_code == 422


def test_cli_follow_prints_changes_as_they_commit(
    config_file: Path, state_env: dict[str, str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    env.update(state_env)
    with ConfigManager.open(config_file, env=state_env) as cm:
        cm.set_height(1)  # the state exists before the read-only follower opens it
        follower = subprocess.Popen(
            [sys.executable, "-m", "dapi_config", "--config", str(config_file),
             "audit", "--follow", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert follower.stdout is not None
            first = json.loads(follower.stdout.readline())
            assert first["revision"] == 1
            cm.set_height(2)
            cm.set_height(3)
            seen = [json.loads(follower.stdout.readline())["revision"] for _ in range(2)]
            assert seen == [2, 3]
        finally:
            follower.send_signal(signal.SIGINT)
            _, errors = follower.communicate(timeout=30)  # also closes its pipes
    assert follower.returncode == 0, errors


def test_the_trail_filtered_by_actor_action_and_target(running_server: RunningServer) -> None:
    cm, client = running_server.manager, running_server.client
    cm.set_height(1)
    with cm.acting_as("api:deployer"):
        cm.add_nodes([_node("n1"), _node("n2")])
        cm.remove_node("n1")
    cm.remove_node("n2")
    mine = cm.get_audit(actor="api:deployer")
    assert [(e.action, e.target) for e in mine] == [("add_nodes", "nodes"), ("remove_node", "n1")]
    assert [e.target for e in cm.get_audit(action="remove_node")] == ["n1", "n2"]
    assert [e.actor for e in cm.get_audit(action="remove_node", target="n2")] == ["library"]
    assert cm.get_audit(actor="nobody") == []
    page = client.get("/admin/v1/audit", params={"actor": "api:deployer", "action": "remove_node"})
    assert [e["target"] for e in page.json()["entries"]] == ["n1"]
    assert page.json()["next_since"] == mine[-1].revision
    too_long = client.get("/admin/v1/audit", params={"target": "x" * 1025})
    assert too_long.status_code == 422
    # Seen in CI: a NUL in a filter reached PostgreSQL, which refused it (503).
    nul = client.get("/admin/v1/audit", params={"actor": "api\x00x"})
    assert nul.status_code == 422
    with pytest.raises(ValidationError, match="no control characters"):
        cm.get_audit(target="n1\x00")


def test_cli_audit_filters_and_follows_only_what_matches(config_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    with ConfigManager.open(config_file) as cm:
        cm.set_height(1)
        cm.add_nodes([_node("a"), _node("b")])
        listed = subprocess.run(
            [sys.executable, "-m", "dapi_config", "--config", str(config_file),
             "audit", "--action", "set_height", "--json"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert [e["action"] for e in json.loads(listed.stdout)["entries"]] == ["set_height"]
        follower = subprocess.Popen(
            [sys.executable, "-m", "dapi_config", "--config", str(config_file),
             "audit", "--follow", "--json", "--since", "0", "--target", "b"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert follower.stdout is not None
            cm.remove_node("a")  # not followed: other target
            cm.set_height(2)
            cm.remove_node("b")
            seen = json.loads(follower.stdout.readline())
            assert (seen["action"], seen["target"]) == ("remove_node", "b")
        finally:
            follower.send_signal(signal.SIGINT)
            _, errors = follower.communicate(timeout=30)
    assert follower.returncode == 0, errors
