"""What a Grafana or Prometheus user graphs and alerts on: the domain gauges on ``/metrics`` (read
from the state at each scrape), and the shipped dashboard and alert rules, every series of which
the service really exports. ``promtool check rules`` checks the rules (CI installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from dapi_config import ConfigManager, InferenceNodeConfig
from tests.api.conftest import RunningServer, StartServer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
RULES = ROOT / "docs" / "prometheus-alerts.yml"
# Read at import: the autouse clean_env fixture hides DAPI_* variables from the tests.
REQUIRE_PROMTOOL = os.environ.get("DAPI_CONFIG_REQUIRE_PROMTOOL", "").strip() not in ("", "0")
#: Series Prometheus makes itself (not the service's to export).
PROMETHEUS_OWN = {"up"}


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample in a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


#: The series names of a metric family of each type (a labelled family declares its series
#: before its first sample: a counter of refused tokens has none until one is refused).
_SUFFIXES = {
    "counter": ("", "_total"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}


def _exported_names(text: str) -> set[str]:
    """Every series name of the exposition: its samples' and those its families declare."""
    lines = text.splitlines()
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in lines if line[:1].isalpha()}
    for line in lines:
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


def _node(node_id: str, enabled: bool) -> InferenceNodeConfig:
    return InferenceNodeConfig(
        id=node_id, host="10.0.0.9", inference_port=5000, poc_port=8080, is_enabled=enabled
    )


def test_the_domain_gauges_follow_the_state(
    manager: ConfigManager, start_server: StartServer
) -> None:
    server = start_server(manager)
    before = _samples(server.client.get("/metrics").text)
    assert before["dapi_config_ready"] == 1.0
    assert before["dapi_config_nodes"] == 0.0 and before["dapi_config_chain_height"] == 0.0
    assert "dapi_config_last_backup_age_seconds" not in before  # no backup yet: absent, not 0
    manager.add_nodes([_node("a", True), _node("b", True), _node("c", False)])
    manager.add_node_version(100, "v0.2.9")
    manager.add_node_version(50, "v0.2.8")
    manager.set_height(60)  # v0.2.8 is reached
    manager.backup()
    after = _samples(server.client.get("/metrics").text)
    assert after["dapi_config_chain_height"] == 60.0
    assert after['dapi_config_node_version_info{version="v0.2.8"}'] == 1.0
    assert (after["dapi_config_nodes"], after["dapi_config_nodes_enabled"]) == (3.0, 2.0)
    assert after["dapi_config_node_version_schedule_length"] == 1.0
    assert after["dapi_config_audit_revision"] == float(manager.latest_revision())
    assert 0.0 <= after["dapi_config_last_backup_age_seconds"] < 600


def test_a_state_that_cannot_be_read_is_not_ready_and_not_zero(
    config_file: Path, start_server: StartServer
) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(9)
        server = start_server(cm)
        cm.state_path.rename(cm.state_path.with_suffix(".moved"))
        samples = _samples(server.client.get("/metrics").text)
        assert samples["dapi_config_ready"] == 0.0


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard target and alert rule."""
    found = []
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        found += [(f"panel {panel['title']!r}", t["expr"]) for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["query"]))
    rules = YAML(typ="safe").load(RULES.read_text())
    for group in rules["groups"]:
        found += [(f"alert {r['alert']}", r["expr"]) for r in group["rules"]]
    return found


def test_every_series_of_the_dashboard_and_the_alerts_is_exported(
    running_server: RunningServer,
) -> None:
    cm = running_server.manager
    cm.add_nodes([_node("a", True)])
    cm.backup()
    running_server.client.get("/admin/v1/nodes")  # a request, so the request series exist
    exported = _exported_names(running_server.client.get("/metrics").text)
    expressions = _expressions()
    assert len(expressions) >= 20
    named = set()
    for where, expr in expressions:
        names = set(re.findall(r"\bdapi_config_\w+|\bup(?=\{)", expr))
        assert names, (where, expr)
        for name in names - PROMETHEUS_OWN:
            assert name in exported, f"{where}: {name} is not exported ({expr})"
        named |= names
    # The dashboard and rules cover the domain gauges.
    for gauge in (
        "dapi_config_ready",
        "dapi_config_chain_height",
        "dapi_config_node_version_info",
        "dapi_config_nodes_enabled",
        "dapi_config_last_backup_age_seconds",
        "dapi_config_audit_revision",
    ):
        assert gauge in named, gauge


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if REQUIRE_PROMTOOL:
            pytest.fail("promtool is missing (Debian: apt install prometheus)")
        pytest.skip("promtool is not installed (Debian: apt install prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
