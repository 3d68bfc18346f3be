"""``dapi-config edit``: the dynamic state in ``$VISUAL``/``$EDITOR`` (SPEC §15). What the
document holds, how an edit is checked and applied: :mod:`dapi_config.editing`."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from dapi_config import editing
from dapi_config.cli._common import app, cli_context, fail, open_manager
from dapi_config.cli._output import stdout
from dapi_config.errors import ConfigError, PreconditionFailedError, ValidationError


def _run_editor(text: str) -> str:
    """``text`` as the operator left it in their editor (a private temporary file)."""
    command = cli_context().settings.editor
    fd, name = tempfile.mkstemp(prefix="dapi-config-edit-", suffix=".yaml")
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        try:
            done = subprocess.run([*shlex.split(command), str(path)], check=False)
        except OSError as exc:
            raise fail(f"cannot run the editor {command!r}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            raise fail(f"the editor {command!r} exited with {done.returncode}; nothing changed")
        return path.read_text(encoding="utf-8")
    finally:
        path.unlink(missing_ok=True)


@app.command()
def edit(
    nodes: Annotated[
        bool, typer.Option("--nodes", help="Also edit the node registry (tokens redacted).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff of the edit; write nothing.")
    ] = False,
) -> None:
    """Edit the dynamic state as YAML in $VISUAL or $EDITOR: checked on save (a bad edit
    opens again with the errors on top), shown as a diff, then applied in one transaction,
    unless the state changed since it was read (nothing is written then).

    Example: EDITOR=nano dapi-config edit --nodes
    """
    with open_manager() as cm:
        document = editing.open_document(cm, nodes=nodes)
        text = document.text
        while True:
            edited = _run_editor(text)
            if edited == text:
                stdout.print("Edit cancelled, no changes made.", markup=False)
                return
            try:
                plan = editing.check_edit(cm, document, edited)
            except (ConfigError, ValidationError) as exc:
                text = editing.with_errors(edited, exc)
                continue
            break
        if not plan.changed:
            stdout.print("No changes.", markup=False)
            return
        stdout.print(plan.diff.rstrip("\n"), markup=False, highlight=False)
        if dry_run:
            stdout.print("--dry-run: nothing was written.", markup=False)
            return
        try:
            summary = editing.apply_edit(cm, document, plan)
        except PreconditionFailedError as exc:
            raise fail(
                f"{exc} Run dapi-config edit again to start from the state as it is."
            ) from None
    stdout.print(f"Applied (revision {summary['revision']}).", markup=False)
