"""The store's integrity check: bounded in time, and what it finds is remembered."""

from __future__ import annotations

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig, StateTimeoutError


def test_a_check_past_its_time_limit_is_inconclusive_not_damage(manager: ConfigManager) -> None:
    manager.set_nodes(
        [
            InferenceNodeConfig(id=f"n{i}", host="10.0.0.5", inference_port=5000, poc_port=8080)
            for i in range(2000)
        ]
    )
    with pytest.raises(StateTimeoutError, match="did not finish within 0 s"):
        manager.backend.quick_check(time_limit=0.0)  # type: ignore[attr-defined]
    assert manager.backend.quick_check() == []  # type: ignore[attr-defined]
    manager.set_height(3)  # not taken for damage: writes go on
    assert manager.get_height() == 3
