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
