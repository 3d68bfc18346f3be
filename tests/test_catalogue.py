"""The catalogue of state kinds (SPEC §15) through the manager: every kind read and replaced by
name, ETags guarding each replace, a merge patch of several kinds applied whole or not at all,
and the schedule and plan operations. Every kind of the catalogue is exercised (a new kind is
tested by being declared)."""

from __future__ import annotations

from typing import Any

import pytest

from dapi_config import ConfigManager
from dapi_config.catalogue import KINDS, kind_named
from dapi_config.errors import NotSupportedError, PreconditionFailedError, ValidationError
from dapi_config.manager.kinds import value_etag
from dapi_config.models import NodeVersion

pytestmark = pytest.mark.both_backends

#: A valid new value for each kind, as a client sends it.
NEW: dict[str, Any] = {
    "height": {"height": 1200},
    "node-versions": [{"height": 5000, "version": "v2"}],
    "seeds.current": {"seed": 7, "epoch_index": 3, "signature": "ab", "claimed": True},
    "seeds.previous": {"seed": 6, "epoch_index": 2, "signature": "aa"},
    "seeds.upcoming": {"seed": 8, "epoch_index": 4, "signature": "ac"},
    "params.validation": {"timestamp_expiration": 60, "timestamp_advance": 30},
    "params.bandwidth": {"estimated_limits_per_block_kb": 100, "kb_per_input_token": 0.5},
    "params.poc": {"models": [{"model_id": "Qwen/Qwen3-32B", "seq_len": 1024}]},
    "upgrade-plan": {"name": "v2", "height": 5000, "binaries": {"linux/amd64": "http://x/y"}},
}


def test_every_kind_has_a_value_to_test() -> None:
    assert {kind.name for kind in KINDS} == set(NEW)


def test_each_kind_is_read_and_replaced_by_name(manager: ConfigManager) -> None:
    for name, given in NEW.items():
        before = manager.state_value(name)
        stored = manager.set_state_value(name, given, if_match=[value_etag(before)])
        assert manager.state_value(name) == stored
        shown = stored.model_dump(mode="json")
        if isinstance(given, dict):
            assert {k: shown[k] for k in given} == given
        else:
            assert shown == given
        # The ETag read before no longer holds: nothing written, and it says what to do.
        revision = manager.latest_revision()
        with pytest.raises(PreconditionFailedError, match="read it again"):
            manager.set_state_value(name, given, if_match=[value_etag(before)])
        assert manager.latest_revision() == revision


def test_height_applies_the_schedule(manager: ConfigManager) -> None:
    manager.add_node_version(100, "v1")
    height = manager.set_state_value("height", {"height": 100})
    assert height.model_dump() == {"height": 100, "current_node_version": "v1"}
    assert manager.get_node_versions() == []


def test_bad_values_change_nothing(manager: ConfigManager) -> None:
    revision = manager.latest_revision()
    for name, bad in (
        ("height", {"height": -1}),
        ("height", {"height": 5, "current_node_version": "v9"}),  # not settable
        ("seeds.current", {"seed": "x"}),
        ("upgrade-plan", {"height": "soon"}),
        ("nope", {}),
    ):
        with pytest.raises(ValidationError):
            manager.set_state_value(name, bad)
    assert manager.latest_revision() == revision


def test_a_patch_applies_whole_or_not_at_all(manager: ConfigManager) -> None:
    manager.set_state_value("seeds.upcoming", NEW["seeds.upcoming"])
    revision = manager.latest_revision()
    with pytest.raises(ValidationError) as bad:
        manager.patch_state(
            {"height": 10, "upgrade_plan": {"name": "v3"}, "seeds": {"upcoming": {"seed": "x"}}}
        )
    assert "seeds.upcoming.seed" in str(bad.value)
    assert manager.latest_revision() == revision and manager.get_height() == 0
    with pytest.raises(ValidationError, match=r"seeds\.later"):
        manager.patch_state({"seeds": {"later": {}}})
    after = manager.patch_state(
        {"height": 10, "upgrade_plan": {"name": "v3"}, "seeds": {"upcoming": {"claimed": True}}},
        if_revision=revision,
    )
    assert after["height"] == 10 and after["upgrade_plan"]["name"] == "v3"
    upcoming = manager.get_upcoming_seed()
    assert (upcoming.seed, upcoming.claimed) == (8, True)  # merged into the stored seed
    with pytest.raises(PreconditionFailedError):
        manager.patch_state({"height": 11}, if_revision=revision)
    assert manager.get_height() == 10


def test_schedule_and_plan_operations(manager: ConfigManager) -> None:
    assert manager.add_node_version(300, "v3")
    assert manager.remove_node_version(300, "v3") is True
    assert manager.remove_node_version(300, "v3") is False
    manager.set_upgrade_plan({"name": "v2", "height": 5})
    manager.clear_upgrade_plan()
    assert manager.get_upgrade_plan().name == ""
    assert manager.clear_state_value("upgrade-plan").model_dump()["name"] == ""
    with pytest.raises(NotSupportedError):
        manager.clear_state_value("height")
    assert kind_named("node-versions").model.model_validate(
        [{"height": 1, "version": "a"}]
    ).root == [NodeVersion(height=1, version="a")]
