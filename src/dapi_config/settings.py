"""Every setting that comes from the environment, read once into one frozen :class:`Settings`.

:meth:`Settings.from_env` is the only reader of the process environment (besides the CLI entry
point, which hands it over). Everything below takes the object, never ``os.environ``; a test or
an embedding program passes its own mapping. Precedence, declared here and nowhere else: an
explicit argument (``--config``, ``--state``, a keyword of ``ConfigManager.open``) beats the
variable, which beats the default.

- ``API_CONFIG_PATH``: the static YAML file (default ``./config.yaml``);
- ``API_STATE_DB_PATH``: the state file (default ``state.db`` beside the config);
- ``API_STATE_URL``: ``postgresql://...``: the state in PostgreSQL instead (shared by replicas);
- ``API_STATE_PG_TIMEOUT``: the longest a PostgreSQL connection attempt, statement or lock
  wait may take, a duration > 0 (default 10s); a stalled server then fails the call with
  ``state_timeout`` instead of hanging it;
- ``API_STATE_MODE``: ``db`` (default), ``dual`` (plus a legacy mirror) or ``yaml``;
- ``API_STATE_MIRROR_PATH``: the ``dual`` mirror (default ``<state>.legacy.yaml``);
- ``API_STATE_KEY``: the master-key secret, >= 16 characters (default: the key file);
- ``API_STATE_ENCRYPTION``: ``sqlcipher`` for whole-file encryption (default plain);
- ``API_AUDIT_KEEP``: audit rows ``N``, days ``Nd`` or ``all`` (default 100000 rows);
- ``API_BACKUP_INTERVAL``: scheduled backups, a duration > 0 (default 1h);
- ``API_BACKUP_KEEP``: backups kept per kind, 0 keeps all (default 24);
- ``API_DEEP_CHECK_INTERVAL``: how often ``serve`` checks the audit trail's chain and the state
  against it, as ``check --deep`` does (default ``6h``; ``0``: never);
- ``API_INTEGRITY_CHECK_INTERVAL``: how often ``serve`` runs SQLite's ``quick_check`` on the
  state file, ``0`` disables (default 10m);
- ``CONFIG_EXPORT_INTERVAL``: the periodic full export, ``0`` disables (default 10m);
- ``CONFIG_EXPORT_KEEP``: timestamped export copies kept (default 0);
- ``CONFIG_EXPORT_SECRETS``: ``true`` includes secrets in exports (default false);
- ``NODE_CONFIG_PATH``: a JSON node file for the registry;
- ``NODE_CONFIG_MODE``: ``once`` (default: merged the first time, a change is warned about)
  or ``sync`` (the file replaces the registry at each start when it changed);
- ``DAPI_<SECTION>__<FIELD>`` and the predecessor's ``KEY_NAME``, ``ACCOUNT_PUBKEY``,
  ``KEYRING_BACKEND``, ``KEYRING_PASSWORD``: overrides of static keys (:mod:`.static`).

Durations: seconds (``600``) or a number with a unit, ``ms``/``s``/``m``/``h``/``d``
(``250ms``, ``30s``, ``10m``, ``1h``, ``2d``), at most a year. Counts: whole numbers >= 0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from dapi_config.errors import ConfigError, MasterKeyError

StateMode = Literal["db", "dual", "yaml"]
STATE_MODES: Final[tuple[StateMode, ...]] = ("db", "dual", "yaml")
Encryption = Literal["sqlcipher"]
NodeConfigMode = Literal["once", "sync"]

STATE_KEY_ENV: Final = "API_STATE_KEY"
ENCRYPTION_ENV: Final = "API_STATE_ENCRYPTION"
AUDIT_KEEP_ENV: Final = "API_AUDIT_KEEP"
BACKUP_INTERVAL_ENV: Final = "API_BACKUP_INTERVAL"
BACKUP_KEEP_ENV: Final = "API_BACKUP_KEEP"
EXPORT_INTERVAL_ENV: Final = "CONFIG_EXPORT_INTERVAL"
EXPORT_KEEP_ENV: Final = "CONFIG_EXPORT_KEEP"
EXPORT_SECRETS_ENV: Final = "CONFIG_EXPORT_SECRETS"
INTEGRITY_INTERVAL_ENV: Final = "API_INTEGRITY_CHECK_INTERVAL"
DEFAULT_INTEGRITY_INTERVAL_S: Final = 600.0
DEEP_CHECK_INTERVAL_ENV: Final = "API_DEEP_CHECK_INTERVAL"
DEFAULT_DEEP_CHECK_INTERVAL_S: Final = 6 * 3600.0
PG_TIMEOUT_ENV: Final = "API_STATE_PG_TIMEOUT"
DEFAULT_PG_TIMEOUT_S: Final = 10.0
FAILPOINT_ENV: Final = "DAPI_CONFIG_FAILPOINT"
PROGRESS_INTERVAL_ENV: Final = "DAPI_CONFIG_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL_S: Final = 5.0

MIN_STATE_KEY_LENGTH: Final = 16
#: About a week of history at one block every six seconds, a few tens of MB.
DEFAULT_AUDIT_KEEP_ROWS: Final = 100_000
DEFAULT_BACKUP_INTERVAL_S: Final = 3600.0
DEFAULT_BACKUP_KEEP: Final = 24
DEFAULT_EXPORT_INTERVAL_S: Final = 600.0

#: Variables that override static keys: the predecessor's names and the ``DAPI_`` prefix.
STATIC_ENV_NAMES: Final = ("KEY_NAME", "ACCOUNT_PUBKEY", "KEYRING_BACKEND", "KEYRING_PASSWORD")
STATIC_ENV_PREFIX: Final = "DAPI_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MAX_DURATION_S: Final = 366 * 24 * 3600.0
_DAYS = re.compile(r"^(\d+(?:\.\d+)?)\s*d$")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


# --- the one duration parser and the one count parser ---------------------------------------


def parse_time(text: str, source: str) -> datetime:
    """A point in time from ISO 8601 with its zone (``2026-12-07T13:40:00Z``, ``...+01:00``).
    Raises :class:`ConfigError` naming ``source``."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{source}: expected an ISO 8601 time such as 2026-12-07T13:40:00Z, got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(f"{source}: {text!r} has no time zone; add one (Z for UTC, or +01:00)")
    return when


def parse_duration(text: str, source: str, *, allow_zero: bool = False) -> float:
    """Seconds from ``"600"``, ``"250ms"``, ``"30s"``, ``"10m"``, ``"1h"`` or ``"2d"``.

    ``0`` only when ``allow_zero`` (where it means "disabled"). Raises :class:`ConfigError`
    starting with ``source`` for anything else, or for more than a year.
    """
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(
            f"{source}: expected seconds (600) or a duration such as 30s, 10m or 1h, got {text!r}"
        )
    seconds = float(match.group(1)) * _UNIT_S[(match.group(2) or "s").lower()]
    if seconds > _MAX_DURATION_S:
        raise ConfigError(f"{source}: {text!r} is longer than a year")
    if seconds == 0 and not allow_zero:
        raise ConfigError(f"{source}: expected a positive duration like 3600, 30m or 1h, got 0")
    return seconds


def parse_count(text: str, source: str) -> int:
    """A whole number >= 0. Raises :class:`ConfigError` starting with ``source``."""
    stripped = text.strip()
    if not stripped.isdigit() or not stripped.isascii():
        raise ConfigError(f"{source}: expected a whole number >= 0, got {text!r}")
    return int(stripped)


def parse_bool(text: str, source: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``; empty is false)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{source}: expected true or false, got {text!r}")


@dataclass(frozen=True)
class AuditRetention:
    """How much audit history to keep: newest ``rows``, rows younger than ``days``, or all."""

    rows: int | None = None
    days: float | None = None


def parse_audit_keep(value: str | None, source: str = AUDIT_KEEP_ENV) -> AuditRetention:
    """``N`` rows, ``Nd`` days, ``all``/``0`` (keep everything); unset: the default rows.

    Raises :class:`ConfigError` naming ``source``.
    """
    if value is None or value.strip() == "":
        return AuditRetention(rows=DEFAULT_AUDIT_KEEP_ROWS)
    text = value.strip().lower()
    if text in ("all", "0"):
        return AuditRetention()
    if text.isdigit():
        return AuditRetention(rows=int(text))
    match = _DAYS.match(text)
    if match and float(match.group(1)) > 0:
        return AuditRetention(days=float(match.group(1)))
    raise ConfigError(
        f"{source}: expected a number of rows (e.g. 100000), days (e.g. 30d) or 'all', "
        f"got {value!r}"
    )


def check_state_key(value: str | None) -> str | None:
    """``value`` (None when unset or empty); raises :class:`MasterKeyError` when shorter than
    16 characters (the message gives the length, never the value)."""
    if not value:
        return None
    if len(value) < MIN_STATE_KEY_LENGTH:
        raise MasterKeyError(
            f"{STATE_KEY_ENV} is too short ({len(value)} characters): use a secret of at least "
            f"{MIN_STATE_KEY_LENGTH} characters, e.g. the output of `openssl rand -base64 32`"
        )
    return value


def _state_mode(raw: str) -> StateMode:
    value = raw.strip().lower() or "db"
    for mode in STATE_MODES:
        if value == mode:
            return mode
    raise ConfigError(f"environment API_STATE_MODE: expected one of db, dual, yaml, got {raw!r}")


def _encryption(raw: str, key: str | None) -> Encryption | None:
    mode = raw.strip().lower()
    if mode in ("", "none", "off", "plain"):
        return None
    if mode != "sqlcipher":
        raise ConfigError(
            f"{ENCRYPTION_ENV}: expected 'sqlcipher' (or empty for a plain state file), got {raw!r}"
        )
    if not key:
        raise ConfigError(
            f"{ENCRYPTION_ENV}=sqlcipher needs {STATE_KEY_ENV}: the secret the state file is "
            f"encrypted with (at least {MIN_STATE_KEY_LENGTH} characters)"
        )
    return "sqlcipher"


def _node_config_mode(raw: str) -> NodeConfigMode:
    value = raw.strip().lower() or "once"
    if value == "once":
        return "once"
    if value == "sync":
        return "sync"
    raise ConfigError(f"environment NODE_CONFIG_MODE: expected once or sync, got {raw!r}")


STATE_URL_ENV = "API_STATE_URL"
OWN_ENV_PREFIX = "DAPI_CONFIG_"
_URL_SCHEMES = ("postgresql://", "postgres://")


def is_state_url(value: str) -> bool:
    """True when ``value`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return value.strip().lower().startswith(_URL_SCHEMES)


def _state_url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not is_state_url(value):
        shown = value.split("@")[-1]  # never echo a password
        raise ConfigError(
            f"{STATE_URL_ENV}: expected a postgresql://user@host:port/database URL, got "
            f"{shown!r}; unset it to keep the state in a SQLite file"
        )
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "")
    return Path(value) if value.strip() else None


@dataclass(frozen=True)
class Settings:
    """The environment's settings, validated. Build with :meth:`from_env`; pass it down."""

    config_path: Path | None = None
    state_path: Path | None = None
    #: ``API_STATE_URL``: a PostgreSQL state (wins over ``API_STATE_DB_PATH``).
    state_url: str | None = field(default=None, repr=False)
    state_mode: StateMode = "db"
    #: ``API_STATE_PG_TIMEOUT``: the bound on every wait for PostgreSQL (seconds).
    pg_timeout: float = DEFAULT_PG_TIMEOUT_S
    mirror_path: Path | None = None
    state_key: str | None = field(default=None, repr=False)
    encryption: Encryption | None = None
    audit_retention: AuditRetention = AuditRetention(rows=DEFAULT_AUDIT_KEEP_ROWS)
    backup_interval: float = DEFAULT_BACKUP_INTERVAL_S
    backup_keep: int = DEFAULT_BACKUP_KEEP
    #: ``API_INTEGRITY_CHECK_INTERVAL``: seconds between the service's integrity checks (0: off).
    integrity_interval: float = DEFAULT_INTEGRITY_INTERVAL_S
    #: ``API_DEEP_CHECK_INTERVAL``: seconds between the service's checks of the audit trail's
    #: chain and of the state against it (0: off).
    deep_check_interval: float = DEFAULT_DEEP_CHECK_INTERVAL_S
    export_interval: float = DEFAULT_EXPORT_INTERVAL_S
    export_keep: int = 0
    export_secrets: bool = False
    node_config_path: Path | None = None
    node_config_mode: NodeConfigMode = "once"
    #: The later predecessor's own SQLite state (``API_SQLITE_PATH``), imported once at open.
    gonka_db_path: Path | None = None
    #: Seconds between "still working" lines of a long CLI operation off a terminal
    #: (``DAPI_CONFIG_PROGRESS_INTERVAL``, default 5 s).
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_S
    #: The editor ``dapi-config edit`` runs: ``VISUAL``, else ``EDITOR``, else ``vi``.
    editor: str = "vi"
    #: The variables that override static keys (``DAPI_*`` and the predecessor's names).
    static_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: The whole mapping it was read from, for a variable named at run time (``rekey``'s
    #: ``--new-key-env VAR``); nothing else looks here.
    _source: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every variable of ``env`` (default: the process environment).

        Raises :class:`ConfigError` naming the variable for a bad value, and
        :class:`MasterKeyError` for an ``API_STATE_KEY`` shorter than 16 characters.
        """
        source = dict(os.environ if env is None else env)
        key = check_state_key(source.get(STATE_KEY_ENV))

        def duration(name: str, default: float, *, allow_zero: bool = False) -> float:
            raw = source.get(name, "")
            return parse_duration(raw, name, allow_zero=allow_zero) if raw.strip() else default

        def count(name: str, default: int) -> int:
            raw = source.get(name, "")
            return parse_count(raw, name) if raw.strip() else default

        static = {
            name: value
            for name, value in source.items()
            if name in STATIC_ENV_NAMES
            # DAPI_CONFIG_* are this product's own knobs (fail points, test settings).
            or (name.startswith(STATIC_ENV_PREFIX) and not name.startswith(OWN_ENV_PREFIX))
        }
        return cls(
            config_path=_path(source, "API_CONFIG_PATH"),
            state_path=_path(source, "API_STATE_DB_PATH"),
            state_url=_state_url(source.get(STATE_URL_ENV, "")),
            state_mode=_state_mode(source.get("API_STATE_MODE", "")),
            pg_timeout=duration(PG_TIMEOUT_ENV, DEFAULT_PG_TIMEOUT_S),
            mirror_path=_path(source, "API_STATE_MIRROR_PATH"),
            state_key=key,
            encryption=_encryption(source.get(ENCRYPTION_ENV, ""), source.get(STATE_KEY_ENV)),
            audit_retention=parse_audit_keep(source.get(AUDIT_KEEP_ENV)),
            backup_interval=duration(BACKUP_INTERVAL_ENV, DEFAULT_BACKUP_INTERVAL_S),
            backup_keep=count(BACKUP_KEEP_ENV, DEFAULT_BACKUP_KEEP),
            integrity_interval=duration(
                INTEGRITY_INTERVAL_ENV, DEFAULT_INTEGRITY_INTERVAL_S, allow_zero=True
            ),
            deep_check_interval=duration(
                DEEP_CHECK_INTERVAL_ENV, DEFAULT_DEEP_CHECK_INTERVAL_S, allow_zero=True
            ),
            export_interval=duration(
                EXPORT_INTERVAL_ENV, DEFAULT_EXPORT_INTERVAL_S, allow_zero=True
            ),
            export_keep=count(EXPORT_KEEP_ENV, 0),
            export_secrets=parse_bool(source.get(EXPORT_SECRETS_ENV, ""), EXPORT_SECRETS_ENV),
            node_config_path=_path(source, "NODE_CONFIG_PATH"),
            node_config_mode=_node_config_mode(source.get("NODE_CONFIG_MODE", "")),
            gonka_db_path=_path(source, "API_SQLITE_PATH"),
            progress_interval=duration(PROGRESS_INTERVAL_ENV, DEFAULT_PROGRESS_INTERVAL_S),
            editor=(source.get("VISUAL") or source.get("EDITOR") or "vi").strip() or "vi",
            static_env=MappingProxyType(static),
            _source=MappingProxyType(source),
        )

    def named_secret(self, name: str) -> str:
        """The value of the variable ``name`` as read ("" when unset): for a secret whose
        variable the operator names on the command line."""
        return self._source.get(name, "")

    def config_file(self, explicit: str | os.PathLike[str] | None = None) -> Path:
        """``explicit``, else ``API_CONFIG_PATH``, else ``./config.yaml``."""
        if explicit is not None:
            return Path(explicit)
        return self.config_path or Path("config.yaml")

    def state_location(
        self, explicit: str | os.PathLike[str] | None, config_file: Path
    ) -> Path | str:
        """Where the state is: ``explicit`` (a path or a ``postgresql://`` URL), else
        ``API_STATE_URL``, else the state file (:meth:`state_file`)."""
        if isinstance(explicit, str) and is_state_url(explicit):
            return explicit
        if explicit is None and self.state_url is not None:
            return self.state_url
        return self.state_file(explicit, config_file)

    def state_file(self, explicit: str | os.PathLike[str] | None, config_file: Path) -> Path:
        """``explicit``, else ``API_STATE_DB_PATH``, else ``state.db`` beside the config."""
        if explicit is not None:
            return Path(explicit)
        return self.state_path or config_file.parent / "state.db"


#: Where prometheus-client's multiprocess mode keeps its files (the library reads it itself).
PROMETHEUS_MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def point_metrics_at(directory: Path) -> None:
    """Tell prometheus-client, which reads its own variable, to count in ``directory``: for a
    worker of ``serve --workers N``. The one write to this process's environment."""
    os.environ[PROMETHEUS_MULTIPROC_ENV] = str(directory)


def failpoints_from_process_env() -> frozenset[str]:
    """The test-only fail points armed in this process (``DAPI_CONFIG_FAILPOINT=a,b``)."""
    raw = os.environ.get(FAILPOINT_ENV, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())
