"""The ``dapi-config`` command: thin commands over :class:`ConfigManager`.

stdout carries only each command's result (scripts parse ``status --json``); logs, warnings
and errors go to stderr. Exit codes: 0 ok, 1 failure, 2 usage error.

Each area has its own module that registers its commands on the shared Typer apps of
:mod:`._common`; importing the module is what adds the commands.
"""

from __future__ import annotations

import sys

from dapi_config.cli import (  # noqa: F401 - importing registers the commands
    audit,
    backup,
    completion,
    edit,
    encryption,
    export,
    init,
    keys,
    legacy,
    nodes,
    secrets,
    serve,
    state,
    status,
    tokens,
    values,
)
from dapi_config.cli._common import app


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
