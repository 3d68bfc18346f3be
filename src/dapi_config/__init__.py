"""dapi-config: crash-safe configuration for dapi nodes.

Static settings come from a YAML file that is never rewritten in normal operation; dynamic
state lives in an embedded SQLite file, one ACID transaction per change::

    from dapi_config import ConfigManager
    with ConfigManager.open("config.yaml") as cm:
        cm.set_height(1200)
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Where each public name lives: imported when first asked for, so ``import dapi_config`` (and
#: every CLI command, which starts by importing it) pays for nothing it does not use.
_EXPORTS = {
    **dict.fromkeys(
        (
            "CommitUnknownError",
            "ConfigError",
            "DapiConfigError",
            "DuplicateNodeError",
            "HistoryUnavailableError",
            "MasterKeyError",
            "NodeNotFoundError",
            "NotSupportedError",
            "PreconditionFailedError",
            "RevisionNotFoundError",
            "SchemaTooNewError",
            "SecurityKeyExistsError",
            "SecurityKeyNotFoundError",
            "StateCorruptError",
            "StateTimeoutError",
            "StateUnavailableError",
            "ValidationError",
        ),
        "dapi_config.errors",
    ),
    "ConfigManager": "dapi_config.manager",
    **dict.fromkeys(
        (
            "ApiConfig",
            "BandwidthParamsCache",
            "ChainNodeConfig",
            "Hardware",
            "InferenceNodeConfig",
            "IssuedSecurityKey",
            "MLNodeKeyConfig",
            "ModelConfig",
            "ModelOverride",
            "NatsServerConfig",
            "NodeVersion",
            "PoCModelParams",
            "PoCParamsCache",
            "SecurityKeyInfo",
            "SeedInfo",
            "StaticConfig",
            "UpgradePlan",
            "ValidationParamsCache",
        ),
        "dapi_config.models",
    ),
}

if TYPE_CHECKING:
    from dapi_config.errors import (
        CommitUnknownError,
        ConfigError,
        DapiConfigError,
        DuplicateNodeError,
        HistoryUnavailableError,
        MasterKeyError,
        NodeNotFoundError,
        NotSupportedError,
        PreconditionFailedError,
        RevisionNotFoundError,
        SchemaTooNewError,
        SecurityKeyExistsError,
        SecurityKeyNotFoundError,
        StateCorruptError,
        StateTimeoutError,
        StateUnavailableError,
        ValidationError,
    )
    from dapi_config.manager import ConfigManager
    from dapi_config.models import (
        ApiConfig,
        BandwidthParamsCache,
        ChainNodeConfig,
        Hardware,
        InferenceNodeConfig,
        IssuedSecurityKey,
        MLNodeKeyConfig,
        ModelConfig,
        ModelOverride,
        NatsServerConfig,
        NodeVersion,
        PoCModelParams,
        PoCParamsCache,
        SecurityKeyInfo,
        SeedInfo,
        StaticConfig,
        UpgradePlan,
        ValidationParamsCache,
    )
    from dapi_config.remote import RemoteConfigManager


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is not None:
        import importlib  # noqa: PLC0415

        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # asked once
        return value
    # RemoteConfigManager needs httpx (the ``remote`` extra).
    if name == "RemoteConfigManager":
        try:
            from dapi_config.remote import RemoteConfigManager  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError(
                f"RemoteConfigManager needs httpx: pip install 'dapi-config[remote]' ({exc})"
            ) from None
        return RemoteConfigManager
    raise AttributeError(f"module 'dapi_config' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ApiConfig",
    "BandwidthParamsCache",
    "ChainNodeConfig",
    "CommitUnknownError",
    "ConfigError",
    "ConfigManager",
    "DapiConfigError",
    "DuplicateNodeError",
    "Hardware",
    "HistoryUnavailableError",
    "InferenceNodeConfig",
    "IssuedSecurityKey",
    "MLNodeKeyConfig",
    "MasterKeyError",
    "ModelConfig",
    "ModelOverride",
    "NatsServerConfig",
    "NodeNotFoundError",
    "NodeVersion",
    "NotSupportedError",
    "PoCModelParams",
    "PoCParamsCache",
    "PreconditionFailedError",
    "RemoteConfigManager",
    "RevisionNotFoundError",
    "SchemaTooNewError",
    "SecurityKeyExistsError",
    "SecurityKeyInfo",
    "SecurityKeyNotFoundError",
    "SeedInfo",
    "StateCorruptError",
    "StateTimeoutError",
    "StateUnavailableError",
    "StaticConfig",
    "UpgradePlan",
    "ValidationError",
    "ValidationParamsCache",
    "__version__",
]
