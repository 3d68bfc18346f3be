"""Opening a state: one pipeline for every open (read-write, shared, read-only).

settings → the static config, its file read and parsed once (:class:`~dapi_config._yaml.YamlFile`)
→ what of it the predecessor left to migrate (:class:`~dapi_config.legacy.LegacyFile`: its
dynamic keys, their values checked before the state is even created) → the backend the
settings name → :class:`Opened`. The manager is built from that, and then runs the start-up
imports (:meth:`~dapi_config.manager.predecessor.PredecessorBridge.run_imports`) unless the
caller asked to run them itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dapi_config import legacy
from dapi_config._yaml import YamlFile
from dapi_config.crypto import MasterKeySource
from dapi_config.errors import ConfigError
from dapi_config.settings import Settings
from dapi_config.static import LoadedConfig, read_static_config
from dapi_config.store import Durability, SqliteStore
from dapi_config.store.backend import StateCore
from dapi_config.store.backup import backup_dir_for
from dapi_config.store.postgres import PostgresStore
from dapi_config.store.sqlcipher import cipher_for

log = logging.getLogger("dapi_config.manager")


@dataclass(frozen=True)
class Opened:
    """What an open produced: the static config, the backend, the master-key source, and
    the config file's dynamic keys still to migrate (None: none, or a read-only open)."""

    loaded: LoadedConfig
    store: StateCore
    keys: MasterKeySource
    pending: legacy.LegacyFile | None


def open_state(
    settings: Settings,
    config_path: str | os.PathLike[str] | None,
    state_path: str | os.PathLike[str] | None,
    *,
    durability: Durability,
    actor: str,
    read_only: bool,
) -> Opened:
    """Run the pipeline (see the module's docstring). A read-write open checks the legacy
    values first: a malformed one stops it before the state is even created (and the
    migration does not check them again). Raises :class:`ConfigError` and what the backends
    raise."""
    loaded, file = read_static_config(settings.config_file(config_path), settings.static_env)
    location = settings.state_location(state_path, loaded.path)
    shared = isinstance(location, str)
    if shared and settings.state_mode != "db":
        raise ConfigError(
            f"API_STATE_MODE={settings.state_mode} keeps a legacy-layout file beside a "
            "SQLite state; a PostgreSQL state (API_STATE_URL) runs in db mode: unset "
            "API_STATE_MODE"
        )
    keys = MasterKeySource(location, settings.state_key, shared=shared)
    pending = None
    if settings.state_mode != "yaml":  # in yaml mode the file's dynamic keys are the state
        pending = legacy.legacy_file(file, check=not read_only)
    if read_only and pending is not None:
        _say_what_is_pending(loaded, pending, location)
    store = _open_backend(
        settings,
        loaded,
        file,
        location,
        keys,
        durability=durability,
        actor=actor,
        read_only=read_only,
    )
    return Opened(loaded, store, keys, None if read_only else pending)


def _say_what_is_pending(
    loaded: LoadedConfig, pending: legacy.LegacyFile, location: Path | str
) -> None:
    """A read-only open of a file not migrated yet: refused when there is no state to show
    (saying what the file holds), else a warning that the state is what is shown."""
    if isinstance(location, Path) and not location.is_file():
        held = legacy.parse_legacy_state(loaded.document, str(loaded.path), warn=False)
        raise ConfigError(
            f"{loaded.path} is a legacy single-file config that was not migrated yet "
            f"(it holds: {legacy.describe_state(held)}); nothing was changed. Run "
            "`dapi-config migrate` (or start the service) to move its state into "
            f"{location}; `dapi-config migrate --dry-run` shows what would move"
        )
    log.warning(
        "%s still holds dynamic keys (%s) that were not migrated; showing the state. "
        "`dapi-config migrate` handles them",
        loaded.path,
        ", ".join(pending.keys),
    )


def _open_backend(
    settings: Settings,
    loaded: LoadedConfig,
    file: YamlFile,
    location: Path | str,
    keys: MasterKeySource,
    *,
    durability: Durability,
    actor: str,
    read_only: bool,
) -> StateCore:
    """The backend the settings name: PostgreSQL (a URL), the SQLite state file (``db``,
    ``dual``) or the legacy single file itself (``yaml``). The only place that tells them
    apart."""
    if isinstance(location, str):
        return PostgresStore.open(
            location,
            default_actor=actor,
            audit_retention=settings.audit_retention,
            read_only=read_only,
            timeout=settings.pg_timeout,
            # A shared state has no directory of its own: each replica keeps its snapshot
            # files beside its config file.
            backup_dir=backup_dir_for(loaded.path),
        )
    if settings.state_mode == "yaml":
        # Loaded only in this mode (~0.7 MiB resident that the database modes never need).
        from dapi_config.legacy.yaml_mode import YamlStore  # noqa: PLC0415

        return YamlStore.open(
            loaded.path,
            state_path=location,
            default_actor=actor,
            keys=keys,
            parsed=(file.raw, file.document),
            read_only=read_only,
        )
    return SqliteStore.open(
        location,
        durability=durability,
        default_actor=actor,
        audit_retention=settings.audit_retention,
        cipher=cipher_for(settings),
        read_only=read_only,
    )
