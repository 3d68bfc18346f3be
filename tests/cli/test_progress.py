"""Long CLI operations say they are working, on stderr (operator experience). Reproduced
first: the first open of a large legacy file ran for half a minute with no output."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config._progress import Step
from dapi_config.cli._progress import PhaseTracker
from tests.conftest import run_cli


def test_a_long_migration_reports_on_stderr_and_leaves_stdout_alone(
    config_file: Path, tmp_path: Path
) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_nodes(
            InferenceNodeConfig(id=f"n{i}", host="10.0.0.1", inference_port=1, poc_port=2)
            for i in range(800)
        )
        legacy = cm.write_rollback(tmp_path / "legacy.yaml")
    env = {"DAPI_CONFIG_PROGRESS_INTERVAL": "10ms"}
    result = run_cli(
        "--config", str(legacy), "--state", str(tmp_path / "new.db"), "migrate", "--json", env=env
    )
    assert result.returncode == 0, result.stderr
    # Off a terminal: a line every interval, naming the phase, how far and the time so far
    # (seen on main: only "still working (N s)").
    assert re.search(r"reading nodes [\d,]+/800 \(\d+%.*; \d+ s so far", result.stderr)
    assert "importing 800 node(s)" in result.stderr
    assert json.loads(result.stdout)["action"] in ("migrated", "none")  # stdout: the result
    listed = run_cli("--config", str(legacy), "--state", str(tmp_path / "new.db"), "nodes",
                     "list", "--json")  # fmt: skip
    assert len(json.loads(listed.stdout)) == 800


def test_the_phase_says_how_far_and_how_long_is_left() -> None:
    tracker = PhaseTracker()
    assert tracker.describe("migrating c.yaml") == "migrating c.yaml"
    tracker(Step("reading nodes", 0, 20_000))
    assert tracker.describe("migrating c.yaml") == "migrating c.yaml: reading nodes 0/20,000 (0%)"
    tracker.phase_started -= 10  # ten seconds into the phase, a quarter done
    tracker(Step("reading nodes", 5_000, 20_000))
    assert tracker.describe("migrating c.yaml") == (
        "migrating c.yaml: reading nodes 5,000/20,000 (25%, about 30 s left)"
    )
    tracker(Step("rewriting the config file"))  # a new phase, without a count
    assert tracker.describe("m") == "m: rewriting the config file"


def test_a_bad_interval_is_one_clear_line(config_file: Path) -> None:
    result = run_cli(
        "--config", str(config_file), "status", env={"DAPI_CONFIG_PROGRESS_INTERVAL": "soon"}
    )
    assert result.returncode == 1
    assert "DAPI_CONFIG_PROGRESS_INTERVAL" in result.stderr and "Traceback" not in result.stderr
