"""dapi-config: crash-safe configuration for dapi nodes.

Static settings come from a YAML file that is never rewritten in normal operation; dynamic
state lives in an embedded SQLite file, one ACID transaction per change::

    from dapi_config import ConfigManager
    with ConfigManager.open("config.yaml") as cm:
        cm.set_height(1200)
"""

from dapi_config.errors import (
    CommitUnknownError,
    ConfigError,
    DapiConfigError,
    DuplicateNodeError,
    MasterKeyError,
    NodeNotFoundError,
    NotSupportedError,
    PreconditionFailedError,
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

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # RemoteConfigManager needs httpx (the ``remote`` extra): imported when first asked for,
    # so ``import dapi_config`` stays as light as it was.
    if name == "RemoteConfigManager":
        try:
            from dapi_config.remote import RemoteConfigManager  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError(
                f"RemoteConfigManager needs httpx: pip install 'dapi-config[remote]' ({exc})"
            ) from None
        return RemoteConfigManager
    raise AttributeError(f"module 'dapi_config' has no attribute {name!r}")


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
