"""The node-version schedule: the predecessor's PopIf cases and a property test."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dapi_config import ConfigManager, NodeVersion, ValidationError


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


class ReferenceSchedule:
    """The predecessor's NodeVersionStack: a height-sorted list, stable for equal heights."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []
        self.current = ""
        self.height = 0

    def add(self, height: int, version: str) -> bool:
        if (height, version) in self.items:
            return False
        index = len([h for h, _ in self.items if h <= height])
        self.items.insert(index, (height, version))
        return True

    def set_height(self, height: int) -> None:
        self.height = height
        due = [item for item in self.items if item[0] <= height]
        if due:
            self.current = due[-1][1]
            self.items = [item for item in self.items if item[0] > height]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 40), st.sampled_from(["a", "b", "c", "d"])),
        st.tuples(st.just("height"), st.integers(0, 50), st.just("")),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_schedule_matches_reference_model(ops: list[tuple[str, int, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text("{}\n")
        model = ReferenceSchedule()
        with ConfigManager.open(cfg, durability="normal") as cm:
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
        with ConfigManager.open(cfg) as cm:
            assert cm.get_node_versions() == expected
            assert cm.get_current_node_version() == model.current
