"""The node-version schedule: the predecessor's PopIf cases and a property test."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dapi_config import ConfigManager, NodeVersion, ValidationError
from tests._examples import examples
from tests.conftest import TEST_STATE_KEY

pytestmark = pytest.mark.both_backends


def versions(cm: ConfigManager) -> list[tuple[int, str]]:
    return [(v.height, v.version) for v in cm.get_node_versions()]


def test_empty_schedule_changes_nothing(manager: ConfigManager) -> None:
    manager.set_height(100)
    assert manager.get_current_node_version() == ""
    assert versions(manager) == []


def test_height_below_lowest_changes_nothing(manager: ConfigManager) -> None:
    manager.add_node_version(100, "v1")
    manager.add_node_version(200, "v2")
    manager.set_height(50)
    assert manager.get_current_node_version() == ""
    assert versions(manager) == [(100, "v1"), (200, "v2")]


def test_height_equal_pops(manager: ConfigManager) -> None:
    manager.add_node_version(100, "v1")
    manager.add_node_version(200, "v2")
    manager.set_height(100)
    assert manager.get_current_node_version() == "v1"
    assert versions(manager) == [(200, "v2")]


def test_height_above_pops_greatest_due(manager: ConfigManager) -> None:
    manager.add_node_version(100, "v1")
    manager.add_node_version(200, "v2")
    manager.add_node_version(300, "v3")
    manager.set_height(250)
    assert manager.get_current_node_version() == "v2"
    assert versions(manager) == [(300, "v3")]


def test_inserted_in_any_order(manager: ConfigManager) -> None:
    for h, v in ((300, "v3"), (100, "v1"), (200, "v2")):
        assert manager.add_node_version(h, v) is True
    assert versions(manager) == [(100, "v1"), (200, "v2"), (300, "v3")]
    manager.set_height(200)
    assert manager.get_current_node_version() == "v2"


def test_duplicates_rejected(manager: ConfigManager) -> None:
    assert manager.add_node_version(100, "v1") is True
    revision = manager.state_summary()["revision"]
    assert manager.add_node_version(100, "v1") is False
    assert manager.state_summary()["revision"] == revision, "a no-op writes no audit row"
    assert manager.add_node_version(100, "v1b") is True, "same height, other version is new"
    assert versions(manager) == [(100, "v1"), (100, "v1b")]


def test_second_pop_at_higher_height(manager: ConfigManager) -> None:
    manager.add_node_version(100, "v1")
    manager.add_node_version(200, "v2")
    manager.set_height(150)
    assert manager.get_current_node_version() == "v1"
    manager.set_height(160)
    assert manager.get_current_node_version() == "v1", "nothing new due"
    manager.set_height(250)
    assert manager.get_current_node_version() == "v2"
    assert versions(manager) == []
    manager.set_height(10)
    assert manager.get_current_node_version() == "v2", "going back does not undo a version"


def test_bad_node_versions_rejected(manager: ConfigManager) -> None:
    for height, version in ((-1, "v"), (1, ""), ("1", "v"), (True, "v")):
        with pytest.raises(ValidationError):
            manager.add_node_version(height, version)  # type: ignore[arg-type]
    assert versions(manager) == []


class GoNodeVersionStack:
    """A line-for-line port of the predecessor's ``NodeVersionStack`` (apiconfig/config.go):
    ``versions`` highest height first, ``insert`` before the first lower height, ``pop_if``
    from the end. The reference the product must match, case by case."""

    def __init__(self, versions: list[tuple[int, str]] | None = None) -> None:
        self.versions: list[tuple[int, str]] = list(versions or [])

    def insert(self, height: int, version: str) -> bool:
        out: list[tuple[int, str]] = []
        inserted = False
        for h, v in self.versions:
            if not inserted and h < height:
                out.append((height, version))
                inserted = True
            if (h, v) == (height, version):
                return False
            out.append((h, v))
        if not inserted:
            out.append((height, version))
        self.versions = out
        return True

    def pop_if(self, height: int) -> tuple[str, bool]:
        if not self.versions:
            return "", False
        result = ""
        while self.versions and height >= self.versions[-1][0]:
            result = self.versions.pop()[1]
        return result, result != ""


class ReferenceSchedule:
    """The Go service around its stack: ``current`` changes when PopIf reports a version."""

    def __init__(self) -> None:
        self.stack = GoNodeVersionStack()
        self.current = ""
        self.height = 0

    @property
    def items(self) -> list[tuple[int, str]]:
        """As reads return them: lowest height first, ties in scheduling order."""
        return sorted(self.stack.versions, key=lambda item: item[0])

    def add(self, height: int, version: str) -> bool:
        return self.stack.insert(height, version)

    def set_height(self, height: int) -> None:
        self.height = height
        version, ok = self.stack.pop_if(height)
        if ok:
            self.current = version


operations = st.lists(
    st.one_of(
        # Few heights, so that ties (several versions at one height) are common.
        st.tuples(st.just("add"), st.integers(0, 12), st.sampled_from(["a", "b", "c", "d"])),
        st.tuples(st.just("height"), st.integers(0, 15), st.just("")),
    ),
    max_size=25,
)


@settings(
    max_examples=examples(80),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_schedule_matches_reference_model(
    state_backend: str, request: pytest.FixtureRequest, ops: list[tuple[str, int, str]]
) -> None:
    env: dict[str, str] = {}
    if state_backend == "postgres":
        # One database for all examples, emptied before each (a new one costs ~0.1 s).
        server = request.getfixturevalue("pg_server")
        if "pg_url" not in request.node.__dict__:
            request.node.__dict__["pg_url"] = server.fresh_database()
        url = request.node.__dict__["pg_url"]
        server.reset(url)
        env = {"API_STATE_URL": url, "API_STATE_KEY": TEST_STATE_KEY}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text("{}\n")
        model = ReferenceSchedule()
        with ConfigManager.open(cfg, durability="normal", env=env) as cm:
            for op, height, version in ops:
                if op == "add":
                    assert cm.add_node_version(height, version) == model.add(height, version)
                else:
                    cm.set_height(height)
                    model.set_height(height)
                assert versions(cm) == model.items
                assert cm.get_current_node_version() == model.current
                assert cm.get_height() == model.height
            expected = [NodeVersion(height=h, version=v) for h, v in model.items]
            # The rollback file lists the schedule exactly as the Go stack holds it.
            rollback = cm.export_full_config(include_secrets=True)["node_versions"]["versions"]
            assert [(v["height"], v["version"]) for v in rollback] == model.stack.versions
        with ConfigManager.open(cfg, env=env) as cm:
            assert cm.get_node_versions() == expected
            assert cm.get_current_node_version() == model.current


def test_same_height_first_scheduled_wins(manager: ConfigManager) -> None:
    """As Go's Insert/PopIf: of two versions at one height, the first scheduled is current."""
    assert manager.add_node_version(100, "first") is True
    assert manager.add_node_version(100, "second") is True
    manager.set_height(100)
    assert manager.get_current_node_version() == "first"
    go = GoNodeVersionStack()
    go.insert(100, "first")
    go.insert(100, "second")
    assert go.pop_if(100) == ("first", True)


def test_rollback_lists_versions_highest_first_and_old_binary_pops_right(
    manager: ConfigManager, tmp_path: Path
) -> None:
    """Reproduction: the rollback listed 600/700/800 lowest first; the old binary (popping from
    the end) stayed on the old version at 650 and made the 600 one current at 800."""
    for height, version in ((600, "v6"), (700, "v7"), (800, "v8")):
        manager.add_node_version(height, version)
    out = manager.write_rollback(tmp_path / "rollback.yaml")
    doc = yaml.safe_load(out.read_text())
    listed = [(v["height"], v["version"]) for v in doc["node_versions"]["versions"]]
    assert listed == [(800, "v8"), (700, "v7"), (600, "v6")]
    old_binary = GoNodeVersionStack(listed)
    assert old_binary.pop_if(650) == ("v6", True)
    assert old_binary.pop_if(800) == ("v8", True)


def test_go_written_schedule_imports_in_scheduling_order(tmp_path: Path) -> None:
    """A Go-written file lists the stack highest first, ties in scheduling order; importing it
    and writing it back gives the same list, and the same version wins at each height."""
    listed = [(300, "c"), (200, "b1"), (200, "b2"), (100, "a")]
    config = tmp_path / "config.yaml"
    lines = ["current_height: 50", "node_versions:", "    versions:"]
    for height, version in listed:
        lines += [f"        - height: {height}", f"          version: {version}"]
    config.write_text("\n".join(lines) + "\n")
    with ConfigManager.open(config) as cm:
        assert versions(cm) == [(100, "a"), (200, "b1"), (200, "b2"), (300, "c")]
        again = cm.export_full_config()["node_versions"]["versions"]
        assert [(v["height"], v["version"]) for v in again] == listed
        cm.set_height(250)
        go = GoNodeVersionStack(listed)
        assert go.pop_if(250) == (cm.get_current_node_version(), True) == ("b1", True)
