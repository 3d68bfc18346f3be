"""The full-config export (§7): one-shot and periodic.

``api-config-full.yaml`` in the config directory holds the merged static + dynamic configuration
in the predecessor's single-file layout. It is written atomically (temp file, fsync, rename), mode
0600, so a reader never sees a partial file. Secrets are redacted unless asked for.

Environment (read into :class:`~dapi_config.settings.Settings`):

- ``CONFIG_EXPORT_INTERVAL``: seconds (``600``) or ``10m`` / ``30s`` / ``1h`` (default 10m);
  ``0`` disables the periodic export.
- ``CONFIG_EXPORT_KEEP``: timestamped copies to keep beside the file (default 0).
- ``CONFIG_EXPORT_SECRETS``: ``true`` includes secrets (default false).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from dapi_config._files import atomic_write
from dapi_config._goyaml import render_go_yaml
from dapi_config.errors import ConfigError, DapiConfigError, ValidationError
from dapi_config.settings import DEFAULT_EXPORT_INTERVAL_S, Settings, parse_duration

log = logging.getLogger(__name__)

EXPORT_FILENAME = "api-config-full.yaml"
#: ``api-config-full.20261127T181500.123456Z.yaml``: sorts by time as text.
_COPY_RE = re.compile(r"^api-config-full\.\d{8}T\d{6}\.\d{6}Z\.yaml$")


class Exportable(Protocol):
    """What an export needs of the manager (which passes itself)."""

    @property
    def config_path(self) -> Path: ...

    def export_full_config(self, *, include_secrets: bool = False) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ExportSettings:
    """How the periodic exporter runs."""

    interval: float = DEFAULT_EXPORT_INTERVAL_S
    keep: int = 0
    include_secrets: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ExportSettings:
        """``CONFIG_EXPORT_INTERVAL``, ``CONFIG_EXPORT_KEEP``, ``CONFIG_EXPORT_SECRETS``."""
        return cls(settings.export_interval, settings.export_keep, settings.export_secrets)

    def replaced(
        self,
        *,
        interval: float | str | None = None,
        keep: int | None = None,
        include_secrets: bool | None = None,
    ) -> ExportSettings:
        """These settings with the arguments that are not None instead (``interval``: seconds
        or a duration such as ``"10m"``). Raises :class:`ConfigError`/:class:`ValidationError`
        for a bad interval."""
        if isinstance(interval, str):
            interval = parse_duration(interval, "interval", allow_zero=True)
        elif interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, (int, float))
        ):
            raise ValidationError(
                f"interval: expected seconds or a duration such as '10m', got {interval!r}",
                [{"field": "interval", "message": "expected a number or duration"}],
            )
        return ExportSettings(
            self.interval if interval is None else float(interval),
            self.keep if keep is None else keep,
            self.include_secrets if include_secrets is None else include_secrets,
        )


def render_legacy_yaml(data: Mapping[str, Any]) -> str:
    """The YAML text of an export (``ConfigManager.export_full_config()``) in the legacy layout.

    The one place that decides how an export looks on disk: the predecessor's Go writer layout
    (sorted keys, 4-space indentation, quoted numeric-looking strings), the same renderer the
    rollback file and the ``dual``-mode mirror use.
    """
    header = "# Full dapi-config export (static + dynamic state). Generated; do not edit.\n"
    return header + render_go_yaml(data)


def default_export_path(manager: Exportable) -> Path:
    """``api-config-full.yaml`` beside the static config file."""
    return manager.config_path.parent / EXPORT_FILENAME


def export_once(
    manager: Exportable,
    path: str | os.PathLike[str] | None = None,
    *,
    include_secrets: bool = False,
    keep: int = 0,
) -> Path:
    """Write the full export to ``path`` (default :func:`default_export_path`) atomically, 0600.

    With ``keep > 0`` also writes a timestamped copy beside it and deletes the oldest copies
    beyond ``keep``. Returns the path written. Raises :class:`StateUnavailableError` (state not
    readable) or :class:`OSError` (the file cannot be written; the old file is untouched).
    """
    target = Path(path) if path is not None else default_export_path(manager)
    text = render_legacy_yaml(manager.export_full_config(include_secrets=include_secrets))
    atomic_write(target, text, mode=0o600)
    if keep > 0:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        atomic_write(target.parent / f"api-config-full.{stamp}.yaml", text, mode=0o600)
        _prune_copies(target.parent, keep)
    return target


def _prune_copies(directory: Path, keep: int) -> None:
    copies = sorted(p for p in directory.iterdir() if _COPY_RE.match(p.name))
    for old in copies[: max(0, len(copies) - keep)]:
        try:
            old.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete old export copy %s: %s", old, exc)


class PeriodicExporter:
    """A daemon thread that exports every ``settings.interval`` seconds until stopped.

    Failures are logged and retried at the next tick; they never stop the thread.
    ``on_export(unix_time)`` is called after every successful export (metrics).
    """

    def __init__(
        self,
        manager: Exportable,
        settings: ExportSettings,
        *,
        path: str | os.PathLike[str] | None = None,
        on_export: Callable[[float], None] | None = None,
    ) -> None:
        if settings.interval <= 0:
            raise ConfigError("CONFIG_EXPORT_INTERVAL: the periodic export needs an interval > 0")
        self.manager = manager
        self.settings = settings
        self.path = Path(path) if path is not None else default_export_path(manager)
        self.on_export = on_export
        self.last_export: float | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dapi-config-export", daemon=True)

    def start(self) -> None:
        """Start the thread; the first export happens at once."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and wait for it (an export in progress completes)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def export_now(self) -> Path | None:
        """One export with these settings; logs and returns None on failure."""
        try:
            written = export_once(
                self.manager,
                self.path,
                include_secrets=self.settings.include_secrets,
                keep=self.settings.keep,
            )
        except (DapiConfigError, OSError) as exc:
            self.last_error = str(exc)
            log.error("full-config export to %s failed: %s", self.path, exc)
            return None
        self.last_export = time.time()
        self.last_error = None
        log.info("full-config export written to %s", written)
        if self.on_export is not None:
            self.on_export(self.last_export)
        return written

    def _run(self) -> None:
        while not self._stop.is_set():
            self.export_now()
            self._stop.wait(self.settings.interval)
