"""``dapi-config state copy``: move the whole state between a SQLite file and PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer

from dapi_config.cli._common import JsonOpt, cli_context, fail, print_json, state_app, working
from dapi_config.cli._output import stdout
from dapi_config.errors import DapiConfigError
from dapi_config.state_copy import copy_state, location_of
from dapi_config.store.backend import Backups, StateBackend
from dapi_config.store.backup import backup_dir_for
from dapi_config.store.postgres import redact_url


@state_app.command("copy")
def state_copy(
    source: Annotated[
        str, typer.Argument(metavar="SRC", help="State file path or postgresql:// URL to read.")
    ],
    target: Annotated[
        str, typer.Argument(metavar="DST", help="State file path or postgresql:// URL to write.")
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a target that holds state (it is backed up first; a PostgreSQL "
            "target to <config dir>/backups).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy every table from SRC to DST in one consistent snapshot, verified (rows per table,
    latest audit revision) before DST commits. DST is created when missing; one holding state
    is refused without --force. Secrets stay sealed; they are re-sealed under DST's master key
    when it differs (API_STATE_KEY is required for a PostgreSQL side).

    Example: dapi-config state copy state.db postgresql://dapi@db/dapi_config
    """
    context = cli_context()
    settings = context.settings

    def backup_first(target_store: StateBackend) -> None:
        if isinstance(target_store, Backups):
            target_store.backup_before("state-copy", keep=settings.backup_keep)

    try:
        with working(f"copying the state to {redact_url(target)}"):
            report = copy_state(
                location_of(source),
                location_of(target),
                settings,
                force=force,
                before_replace=backup_first,
                backup_dir=backup_dir_for(context.config_file()),
            )
    except DapiConfigError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(report.as_dict())
        return
    stdout.print(
        f"copied {sum(report.rows.values())} rows (revision {report.revision}) from "
        f"{report.source} to {report.target}"
        + ("; secrets re-sealed under the target's master key" if report.resealed else ""),
        markup=False,
    )
