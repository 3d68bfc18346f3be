"""Reading the static YAML file, with environment overrides and validation.

Sources, lowest precedence first (declared here and nowhere else):

1. the YAML file (which one: :meth:`dapi_config.settings.Settings.config_file`);
2. the predecessor's variables: ``KEY_NAME``, ``ACCOUNT_PUBKEY``, ``KEYRING_BACKEND``,
   ``KEYRING_PASSWORD``;
3. ``DAPI_<SECTION>__<FIELD>`` (``DAPI_API__PORT=9000`` sets ``api.port``).

The file is never written here. Unknown keys are kept (and warned about once); keys of the
legacy single-file layout are left for :mod:`dapi_config.legacy`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dapi_config._files import atomic_write, fsync_directory
from dapi_config._yaml import YamlFile, read_yaml_document
from dapi_config.errors import ConfigError
from dapi_config.models import (
    STATIC_SECTIONS,
    VALIDATION_ERRORS,
    ApiConfig,
    StaticConfig,
    describe,
    error_items,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "DAPI_"

#: Top-level keys of the predecessor's single-file layout that hold dynamic state.
LEGACY_DYNAMIC_KEYS: tuple[str, ...] = (
    "nodes",
    "merged_node_config",
    "current_height",
    "current_node_version",
    "upcoming_seed",
    "current_seed",
    "previous_seed",
    "upgrade_plan",
    "node_versions",
    "validation_params",
    "bandwidth_params",
    "poc_params",
    "last_processed_height",
    "last_used_version",
)

#: The predecessor's environment variables and the key each sets.
LEGACY_ENV: dict[str, tuple[str, str]] = {
    "KEY_NAME": ("chain_node", "signer_key_name"),
    "ACCOUNT_PUBKEY": ("chain_node", "account_public_key"),
    "KEYRING_BACKEND": ("chain_node", "keyring_backend"),
    "KEYRING_PASSWORD": ("chain_node", "keyring_password"),
}

#: Ports the predecessor's binary read as "not set" when 0 (Go's zero value: the key absent,
#: or written back as 0 by its own writer, as every ``deploy/join`` node's file is), and what
#: it used then. For the other ports 0 made it listen on a random free port nobody could
#: reach: they are read as not set too, so the documented default applies.
GO_ZERO_PORTS: dict[tuple[str, str], int] = {
    ("api", "ml_grpc_server_port"): 9300,
    ("nats", "port"): 4222,
    ("api", "port"): 8080,
    ("api", "public_server_port"): 9000,
    ("api", "ml_server_port"): 9100,
    ("api", "admin_server_port"): 9200,
}

#: The worker-key section's name in the predecessor from 2025-01 to 2025-08.
LEGACY_KEY_SECTION = "key_config"

#: The old writer persisted the keyring password under this key of ``chain_node``.
LEGACY_PASSWORD_KEY = "KeyringPassword"  # noqa: S105 - a key name

_warned: set[tuple[str, str]] = set()


def _warn_once(source: str, message: str) -> None:
    if (source, message) not in _warned:
        _warned.add((source, message))
        log.warning("%s: %s", source, message)


@dataclass
class LoadedConfig:
    """A validated static config and where it came from."""

    path: Path
    config: StaticConfig
    #: The file's top-level mapping as plain data (legacy keys included), for the importer.
    document: dict[str, Any] = field(default_factory=dict)
    #: Top-level keys that are neither static sections nor legacy dynamic keys.
    unknown_keys: list[str] = field(default_factory=list)
    #: Values the strict rules refuse that were read as the predecessor read them (a port of
    #: 0 as not set), one note each; ``check`` lists them.
    predecessor_values: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.path.parent


def load_static_config(config_path: str | os.PathLike[str], env: Mapping[str, str]) -> LoadedConfig:
    """Read ``config_path``, apply the overrides in ``env`` (:attr:`Settings.static_env`) and
    validate the static config.

    Raises :class:`ConfigError` with one message naming the file or variable, the key and
    what was expected.
    """
    return read_static_config(config_path, env)[0]


def read_static_config(
    config_path: str | os.PathLike[str], env: Mapping[str, str]
) -> tuple[LoadedConfig, YamlFile]:
    """:func:`load_static_config`, and the file as read (for whoever needs its bytes or its
    document next: the legacy migration, the ``yaml`` backend), so it is read once."""
    path = Path(config_path)
    source = str(path)
    parsed, raw = read_yaml_document(path)
    data = parsed.data if parsed.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}"
        )
    _warn_if_readable_by_others(path, data)

    merged: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key in STATIC_SECTIONS:
            section = {} if value is None else value
            if not isinstance(section, dict):
                raise ConfigError(
                    f"{source}: {key}: expected a mapping, got {type(section).__name__} {section!r}"
                )
            merged[key] = dict(section)
        elif key not in LEGACY_DYNAMIC_KEYS:
            if key != LEGACY_KEY_SECTION:
                unknown.append(str(key))
            merged[key] = value
    legacy_keys = data.get(LEGACY_KEY_SECTION)
    if isinstance(legacy_keys, dict) and "ml_node_key_config" not in data:
        # 2025-01 to 2025-08 the predecessor called the worker-key section key_config; it
        # stays in the file (and in exports) and is read as ml_node_key_config.
        merged["ml_node_key_config"] = dict(legacy_keys)
        log.info("%s: key_config read as ml_node_key_config (its earlier name)", source)
    for key in unknown:
        _warn_once(source, f"unknown top-level key {key!r} kept as is")

    chain = merged.setdefault("chain_node", {})
    legacy_password = chain.pop(LEGACY_PASSWORD_KEY, None)

    overrides = _env_overrides(env)
    token_override = overrides.get(("api", "admin_token"))
    if token_override is not None and token_override[0] == "":
        if merged.get("api", {}).get("admin_token"):
            raise ConfigError(
                f"{token_override[1]} is set but empty: it would open the admin API although "
                f"{source} sets api.admin_token. Unset {token_override[1]} to use the file's "
                "token, or give it the token to use"
            )
        del overrides[("api", "admin_token")]  # empty, and nothing to override: no token
    for (section, key), (value, var) in overrides.items():
        merged.setdefault(section, {})[key] = value
        log.debug("%s overrides %s.%s", var, section, key)

    if legacy_password and "keyring_password" not in merged["chain_node"]:
        _warn_once(
            source,
            f"chain_node.{LEGACY_PASSWORD_KEY} holds the keyring password in the "
            "file; it is used because KEYRING_PASSWORD is unset. Move it to the "
            "KEYRING_PASSWORD environment variable and delete it from the file.",
        )
        merged["chain_node"]["keyring_password"] = str(legacy_password)

    notes = _zero_ports_unset(merged, overrides, source)
    try:
        config = StaticConfig.model_validate(merged)
    except VALIDATION_ERRORS as exc:
        items = error_items(exc)
        where = _name_sources(items, overrides, source)
        raise ConfigError(f"{where}: {describe(items)}") from None

    for section in STATIC_SECTIONS:
        extra = getattr(config, section).model_extra or {}
        for key in extra:
            if (section, key) in overrides:
                # The variable set it, not the file (seen: DAPI_API__BOGUS blamed on the file).
                variable = overrides[(section, key)][1]
                _warn_once(
                    "environment",
                    f"{variable} sets {section}.{key}, which is not a setting dapi-config "
                    "knows (kept as is); check the variable's name",
                )
            else:
                _warn_once(source, f"unknown key {section}.{key} kept as is")
    if config.api.poc_callback_url and not _looks_like_url(config.api.poc_callback_url):
        _warn_once(
            source,
            f"api.poc_callback_url {config.api.poc_callback_url!r} is not a URL such as "
            "http://host:port; kept as the predecessor accepted it",
        )
    loaded = LoadedConfig(
        path=path,
        config=config,
        document=data,
        unknown_keys=unknown,
        predecessor_values=notes,
    )
    return loaded, YamlFile(path, raw, parsed)


def _zero_ports_unset(
    merged: dict[str, Any], overrides: dict[tuple[str, str], tuple[str, str]], source: str
) -> list[str]:
    """Drop the ports given as 0 (the default applies), as the predecessor read them; returns
    a note for each."""
    notes = []
    for (section, key), default in GO_ZERO_PORTS.items():
        block = merged.get(section)
        if not isinstance(block, dict) or block.get(key) not in (0, "0"):
            continue
        del block[key]
        where = overrides[(section, key)][1] if (section, key) in overrides else source
        note = f"{section}.{key}: 0 means not set, as it did for the predecessor; {default} is used"
        notes.append(f"{where}: {note}")
        _warn_once(where, note)
    return notes


def _env_overrides(env: Mapping[str, str]) -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) -> (value, variable name), DAPI_ variables winning over legacy ones."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for var, target in LEGACY_ENV.items():
        if env.get(var):
            found[target] = (env[var], var)
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or parts[0] not in STATIC_SECTIONS or not parts[1]:
            _warn_once(
                "environment",
                f"{var} is not DAPI_<SECTION>__<FIELD> for a known "
                f"section ({', '.join(STATIC_SECTIONS)}); ignored",
            )
            continue
        found[(parts[0], parts[1])] = (env[var], var)
    return found


def _name_sources(
    items: list[dict[str, Any]], overrides: dict[tuple[str, str], tuple[str, str]], source: str
) -> str:
    """Blame the env variable when the bad value came from one, else the file."""
    for item in items:
        parts = tuple(str(item["field"]).split(".")[:2])
        if len(parts) == 2 and parts in overrides:
            var = overrides[(parts[0], parts[1])][1]
            item["field"] = f"{item['field']} (from environment {var})"
    return source


def config_file_path(value: str, config_dir: Path) -> Path:
    """A path the config file names: relative ones are relative to the config file's
    directory (where the file is read from, not where the command runs)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else config_dir / path


#: The most an admin token file may hold (a token, not a document).
_TOKEN_FILE_MAX = 4096


def admin_token_of(api: ApiConfig, config_dir: Path) -> str | None:
    """The admin token: ``api.admin_token``, or the first line of the file
    ``api.admin_token_file`` names (a mounted secret; surrounding whitespace dropped), None
    when neither is set. Raises :class:`ConfigError` naming what to fix."""
    inline = None if api.admin_token is None else api.admin_token.get_secret_value()
    if not api.admin_token_file:
        return inline or None
    if inline:
        raise ConfigError(
            "api.admin_token and api.admin_token_file are both set: keep one (the file is "
            "for a mounted secret)"
        )
    path = config_file_path(api.admin_token_file, config_dir)
    try:
        with path.open("rb") as handle:
            raw = handle.read(_TOKEN_FILE_MAX + 1)
    except OSError as exc:
        raise ConfigError(
            f"api.admin_token_file: cannot read {path}: {exc.strerror or exc}"
        ) from None
    if len(raw) > _TOKEN_FILE_MAX:
        raise ConfigError(f"api.admin_token_file: {path} is over {_TOKEN_FILE_MAX} bytes")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"api.admin_token_file: {path} is not UTF-8 text") from None
    if not token or any(c.isspace() or ord(c) < 32 for c in token):
        raise ConfigError(
            f"api.admin_token_file: {path} must hold one token on one line (it is empty or "
            "holds spaces or control characters)"
        )
    return token


#: What ``dapi-config init`` writes: every static section with its defaults, explained.
NEW_CONFIG = """\
# dapi-config static configuration: read at start, never rewritten by the service.
# Everything that changes at run time (height, seeds, nodes, versions, upgrade plan, keys)
# lives in the state (state.db beside this file, or API_STATE_URL for PostgreSQL).
# Any key can be overridden from the environment: DAPI_<SECTION>__<KEY>, e.g.
# DAPI_API__ADMIN_SERVER_PORT=9300.
api:
  port: 8080                      # the node's public API
  poc_callback_url: ""            # where the ML nodes post proof-of-compute results
  ml_grpc_callback_address: ""
  public_url: ""                  # how others reach this node, e.g. http://node.example:8080
  public_server_port: 9000
  ml_server_port: 9100
  admin_server_port: 9200         # `dapi-config serve` listens here (admin API, console)
  ml_grpc_server_port: 9300
  test_mode: false
  # admin_token_file: admin.token # a file holding the admin token (or admin_token: ...);
  #                               # scoped tokens: `dapi-config tokens create NAME --role ...`
  # tls_cert: tls.crt             # serve HTTPS (with tls_key; tls_client_ca for client certs)
  # tls_key: tls.key
chain_node:
  url: ""                         # the chain node's RPC, e.g. http://127.0.0.1:26657
  is_genesis: false
  seed_api_url: ""
  account_public_key: ""
  signer_key_name: ""
  keyring_backend: ""
  keyring_dir: ""                 # the keyring password comes from KEYRING_PASSWORD only
ml_node_key_config:               # the worker key: `dapi-config state worker-key` makes one,
  worker_public: ""               # sealed in the state (leave these empty)
  worker_private: ""
nats:
  host: ""
  port: 4222
"""


def write_new_config(path: Path) -> Path:
    """Write :data:`NEW_CONFIG` to ``path`` (mode 0600, synced), never over an existing file.
    Raises :class:`ConfigError` (it exists, or cannot be written)."""
    if path.exists() or path.is_symlink():
        raise ConfigError(f"{path}: exists; init never overwrites a config (remove it first)")
    staged = path.with_name(f".{path.name}.init-{os.getpid()}")
    try:
        atomic_write(staged, NEW_CONFIG.encode("utf-8"), mode=0o600)
        os.link(staged, path)  # fails if the file appeared meanwhile: no clobbering
        fsync_directory(path.parent)
    except FileExistsError:
        raise ConfigError(f"{path}: exists; init never overwrites a config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()
    return path


def secrets_in(data: dict[str, Any]) -> list[str]:
    """The secrets a config document holds (``section.key``, non-empty values only)."""
    found: list[str] = []
    for section, key in (
        ("ml_node_key_config", "worker_private"),
        (LEGACY_KEY_SECTION, "worker_private"),
        ("chain_node", LEGACY_PASSWORD_KEY),
        ("chain_node", "keyring_password"),
        ("api", "admin_token"),
    ):
        block = data.get(section)
        if isinstance(block, dict) and block.get(key) not in (None, ""):
            found.append(f"{section}.{key}")
    return found


def _warn_if_readable_by_others(path: Path, data: dict[str, Any]) -> None:
    """Warn when a file that others can read holds a secret (a shipped example that holds
    none, and cannot keep mode 0600 in a git checkout, is not worth a warning)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    held = secrets_in(data)
    if mode & (stat.S_IRGRP | stat.S_IROTH) and held:
        _warn_once(
            str(path),
            f"config file is readable by group/others (mode {mode & 0o777:o}) and holds "
            f"{', '.join(held)}: chmod 600 it",
        )


def _looks_like_url(value: str) -> bool:
    parsed = urlparse(value)
    return bool(parsed.scheme and parsed.netloc)
