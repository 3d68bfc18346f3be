"""The package imports, exports what the spec names, and opens a manager."""

from __future__ import annotations

import dapi_config
from dapi_config import ConfigManager


def test_all_is_sorted_and_complete() -> None:
    assert dapi_config.__all__ == sorted(dapi_config.__all__)
    for name in dapi_config.__all__:
        assert hasattr(dapi_config, name), name
    spec_names = {
        "ConfigManager",
        "ApiConfig",
        "ChainNodeConfig",
        "MLNodeKeyConfig",
        "NatsServerConfig",
        "SeedInfo",
        "ValidationParamsCache",
        "BandwidthParamsCache",
        "NodeVersion",
        "UpgradePlan",
        "InferenceNodeConfig",
        "ModelConfig",
        "Hardware",
        "ConfigError",
        "ValidationError",
        "DuplicateNodeError",
        "NodeNotFoundError",
        "StateUnavailableError",
        "SchemaTooNewError",
    }
    assert spec_names <= set(dapi_config.__all__)


def test_open_set_read(manager: ConfigManager) -> None:
    manager.set_height(1200)
    assert manager.get_height() == 1200
