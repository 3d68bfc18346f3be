"""The ``dapi-config`` command: thin commands over :class:`ConfigManager`.

stdout carries only each command's result (scripts parse ``status --json``); logs, warnings
and errors go to stderr. Exit codes: 0 ok, 1 failure, 2 usage error.

Each area has its own module that registers its commands on the shared Typer apps of
:mod:`._common`; importing the module is what adds the commands. They are imported when the
command line is run (or :data:`app` is first asked for), not when this package is: ``dapi-config
--version`` answers without them.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dapi_config.cli._common import app

_COMMAND_MODULES = (
    "audit",
    "backup",
    "completion",
    "edit",
    "encryption",
    "export",
    "init",
    "keys",
    "legacy",
    "nodes",
    "secrets",
    "serve",
    "state",
    "status",
    "tokens",
    "values",
)


def _app() -> Any:
    """The root Typer app with every command registered."""
    for name in _COMMAND_MODULES:
        importlib.import_module(f"dapi_config.cli.{name}")
    return importlib.import_module("dapi_config.cli._common").app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app()
    raise AttributeError(f"module 'dapi_config.cli' has no attribute {name!r}")


def main() -> None:
    """Console entry point."""
    if sys.argv[1:] == ["--version"]:  # what scripts and packagers ask most: no imports
        from dapi_config import __version__  # noqa: PLC0415

        print(__version__)
        return
    try:
        _app()()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
