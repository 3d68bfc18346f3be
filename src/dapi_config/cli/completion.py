"""``dapi-config completion SHELL``: the shell completion script for a named shell."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

# What --show-completion itself prints, for a shell named here rather than guessed.
from typer._completion_shared import get_completion_script

from dapi_config.cli._common import app

PROG = "dapi-config"


class Shell(enum.StrEnum):
    """The shells completion scripts are made for."""

    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"


@app.command()
def completion(
    shell: Annotated[Shell, typer.Argument(help="The shell: bash, zsh or fish.")],
) -> None:
    """Print the completion script for SHELL (--show-completion only knows the current one).

    Example: dapi-config completion zsh > ~/.zfunc/_dapi-config
    """
    # For the installed command (also when this runs as `python -m dapi_config`).
    script = get_completion_script(
        prog_name=PROG, complete_var="_DAPI_CONFIG_COMPLETE", shell=shell.value
    )
    typer.echo(script)
