"""Optional whole-file encryption of the state file with SQLCipher (``dapi-config[encryption]``).

Switched on by ``API_STATE_ENCRYPTION=sqlcipher``; the secret is ``API_STATE_KEY`` (any string of
at least 16 characters). The mode has its own variable because ``API_STATE_KEY`` also keys the
per-secret encryption of §11: setting the key must never silently change the file format.

How the key reaches SQLCipher: the secret is stretched once per process with PBKDF2-HMAC-SHA256
(600,000 iterations, a fixed application salt that keeps this key apart from every other key
derived from the same secret) into 32 raw bytes, passed as ``PRAGMA key = "x'<hex>'"`` -- the
raw-key form, so no user text is ever spliced into SQL and SQLCipher skips its own per-connection
KDF (opening a connection stays cheap; the stretching is done once). SQLCipher still salts each
file (its first 16 bytes) for the page HMAC keys. ``PRAGMA key`` is the first statement on every
connection; the key is never logged and never part of a repr or an error message.

The driver (``sqlcipher3``) is API-compatible with :mod:`sqlite3` but has its own exception
classes; :data:`dapi_config.store.connection.SQLITE_ERRORS` covers both once it is loaded.

A file converted by ``dapi-config encrypt`` gets a marker file beside it (``<state>.encrypted``)
so that a process started without encryption says "this file is encrypted" instead of taking
the file for damage and restoring an old plain backup over it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from dapi_config.errors import ConfigError
from dapi_config.store import _held_files

if TYPE_CHECKING:
    from dapi_config.settings import Settings

ENV_MODE: Final = "API_STATE_ENCRYPTION"
ENV_KEY: Final = "API_STATE_KEY"
SQLCIPHER: Final = "sqlcipher"
MIN_KEY_LENGTH: Final = 16
DRIVER_MODULE: Final = "sqlcipher3"
INSTALL_HINT: Final = "install the extra: pip install 'dapi-config[encryption]'"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
MARKER_SUFFIX: Final = ".encrypted"
MARKER_TEXT: Final = (
    "The state file beside this marker is encrypted with SQLCipher. Open it with "
    f"{ENV_MODE}={SQLCIPHER} and {ENV_KEY} set; `dapi-config decrypt` turns it back into a "
    "plain SQLite file and removes this marker.\n"
)

_KDF_SALT: Final = b"dapi-config/state-file-encryption/sqlcipher/v1"
_KDF_ITERATIONS: Final = 600_000


_on_driver_loaded: list[Callable[[ModuleType], None]] = []


@functools.cache
def driver() -> ModuleType | None:
    """The SQLCipher driver module, or None when the extra is not installed.

    It is imported on first use (about 7 MiB resident): a process that never opens an
    encrypted file never loads it. The functions given to :func:`when_driver_loaded` run
    once it is.
    """
    try:
        module = importlib.import_module(DRIVER_MODULE)
    except ImportError:
        return None
    for callback in _on_driver_loaded:
        callback(module)
    return module


def when_driver_loaded(callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(driver)`` when the driver is loaded (at once if it already is)."""
    _on_driver_loaded.append(callback)
    if driver.cache_info().currsize:  # looked up before this callback was registered
        module = driver()
        if module is not None:
            callback(module)


def require_driver() -> ModuleType:
    """The SQLCipher driver; raises :class:`ConfigError` naming the extra when it is missing."""
    module = driver()
    if module is None:
        raise ConfigError(
            f"{ENV_MODE}={SQLCIPHER}: the SQLCipher driver ({DRIVER_MODULE}) is not installed; "
            f"{INSTALL_HINT}"
        )
    return module


@functools.lru_cache(maxsize=8)
def _derive(secret: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), _KDF_SALT, _KDF_ITERATIONS)


@dataclass(frozen=True)
class StateCipher:
    """The key of an encrypted state file; opens SQLCipher connections with it.

    Build with :meth:`from_secret` or :func:`cipher_for`. The key never shows in ``repr``.
    """

    raw_key: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: str, *, source: str = ENV_KEY) -> StateCipher:
        """Derive the file key from ``secret``. Raises :class:`ConfigError` when it is shorter
        than 16 characters (``source`` names where it came from; the secret is never shown)."""
        if len(secret) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"{source}: the state key must be at least {MIN_KEY_LENGTH} characters "
                f"(got {len(secret)})"
            )
        return cls(_derive(secret))

    def key_pragma(self) -> str:
        """``PRAGMA key`` in SQLCipher's raw-key form (hex digits only: nothing to quote)."""
        return f"PRAGMA key = \"x'{self.raw_key.hex()}'\""

    def apply(self, conn: Any) -> None:
        """Key a fresh driver connection: ``PRAGMA key`` first, before any other statement."""
        conn.execute(self.key_pragma())
        # SQLCipher prints HMAC failures (a wrong key) to stderr itself; we report them once,
        # as an operator message, instead.
        conn.execute("PRAGMA cipher_log_level = NONE")

    def connect(self, database: str, **kwargs: Any) -> Any:
        """A driver connection to ``database`` with the key applied (same arguments as
        :func:`sqlite3.connect`). Raises :class:`ConfigError` when the driver is missing."""
        conn = require_driver().connect(database, **kwargs)
        try:
            self.apply(conn)
        except BaseException:
            conn.close()
            raise
        return conn


def cipher_for(settings: Settings) -> StateCipher | None:
    """The cipher that ``API_STATE_ENCRYPTION``/``API_STATE_KEY`` configure (None: plain file).

    Raises :class:`ConfigError` for a short key or a missing driver (the mode and the key's
    presence were checked when the settings were read).
    """
    if settings.encryption is None:
        return None
    require_driver()
    return StateCipher.from_secret(settings.state_key or "")


def connect(database: str, cipher: StateCipher | None, **kwargs: Any) -> Any:
    """Open ``database`` plain (stdlib :mod:`sqlite3`) or through SQLCipher with ``cipher``."""
    if cipher is None:
        import sqlite3  # noqa: PLC0415 - keeps this module free of a hard sqlite3 dependency

        return sqlite3.connect(database, **kwargs)
    return cipher.connect(database, **kwargs)


# --- telling an encrypted file from a plain or damaged one -------------------------------------


def marker_path(state: str | os.PathLike[str]) -> Path:
    """``<state>.encrypted``: written by ``dapi-config encrypt``, removed by ``decrypt``."""
    return Path(f"{os.fspath(state)}{MARKER_SUFFIX}")


def has_plain_header(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with SQLite's plain header (False: encrypted, garbage, empty)."""
    try:
        return _held_files.read_prefix(path, len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def not_enabled_message(path: str | os.PathLike[str]) -> str:
    return (
        f"{path} is encrypted but state-file encryption is not enabled: set "
        f"{ENV_MODE}={SQLCIPHER} and {ENV_KEY} (the SQLCipher driver comes with "
        f"'dapi-config[encryption]'). Nothing was changed"
    )


def wrong_key_message(path: str | os.PathLike[str]) -> str:
    return (
        f"{path}: cannot decrypt the state file with {ENV_KEY}: it is not the key the file was "
        f"encrypted with (or the file's first page is damaged). Nothing was changed"
    )


def not_encrypted_message(path: str | os.PathLike[str]) -> str:
    return (
        f"{path} is a plain (unencrypted) SQLite file but {ENV_MODE}={SQLCIPHER}: run "
        f"`dapi-config encrypt` to encrypt it, or unset {ENV_MODE}. Nothing was changed"
    )


def maybe_encrypted_hint() -> str:
    return f"if it is encrypted, set {ENV_MODE}={SQLCIPHER} and {ENV_KEY}"


def unreadable_message(path: str | os.PathLike[str], cipher: StateCipher | None) -> str | None:
    """The operator message for "file is not a database" on ``path`` when it is about the key
    or the mode rather than damage (None: nothing points at encryption)."""
    size = _size(path)
    if cipher is not None:
        if has_plain_header(path):
            return not_encrypted_message(path)
        return wrong_key_message(path) if size else None
    if size and not has_plain_header(path):
        if marker_path(path).exists():
            return not_enabled_message(path)
        return (
            f"{path} is not a plain SQLite file: it is damaged, or encrypted "
            f"({maybe_encrypted_hint()})"
        )
    return None


def _size(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
