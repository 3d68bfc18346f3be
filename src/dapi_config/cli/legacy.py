"""``dapi-config migrate`` and ``dapi-config rollback``: to and from the legacy single file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dapi_config import legacy
from dapi_config._logging import results_printed_elsewhere
from dapi_config.cli._common import (
    JsonOpt,
    OverwriteOpt,
    app,
    cli_context,
    fail,
    open_manager,
    print_json,
    working,
)
from dapi_config.cli._output import stdout
from dapi_config.errors import DapiConfigError
from dapi_config.static import load_static_config, secrets_in


@app.command()
def migrate(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would move; change nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Import the file's dynamic keys even though the state took a legacy import "
            "before (empty values too); the state is backed up first.",
        ),
    ] = False,
    gonka_db: Annotated[
        Path | None,
        typer.Option(
            "--gonka-db",
            help="Also import this gonka.db (the later predecessor's own SQLite state), once.",
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the dynamic keys of a legacy single-file config into the state file.

    Writes a byte-identical backup <config>.pre-migration.<UTC time> first, imports in one
    transaction, then rewrites the config file to its static keys (comments kept). Safe to
    interrupt and to run again; a static-only file is left untouched. Every start does the
    same automatically. Once the state has taken a legacy import, dynamic keys that appear in
    the file again are not imported (the file is backed up and stripped; a warning names the
    keys that differ); --force imports them, after a backup of the state.

    Example: dapi-config --config config.yaml migrate --dry-run
    """
    if gonka_db is not None and dry_run:
        raise fail("--gonka-db cannot be combined with --dry-run")
    imported: legacy.GonkaDbReport | None = None
    secrets_left: list[str] = []
    if dry_run:
        try:
            # Validate the static part too: a real run would stop on it.
            context = cli_context()
            config = context.config_file()
            load_static_config(config, context.settings.static_env)
            with working(f"planning the migration of {config}"):
                report = legacy.plan_migration(config)
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
    else:
        # Opened without importing: the work happens here, where the command says so.
        with open_manager(migrate_legacy=False) as cm:
            if cm.state_mode == "yaml":
                raise fail(
                    "API_STATE_MODE=yaml keeps the state in the config file itself; "
                    "unset it (or set db) to migrate into the state database"
                )
            with working(f"migrating {cm.config_path}"), results_printed_elsewhere():
                done = cm.run_imports(force=force, gonka_db=gonka_db)
            report = done.migration or legacy.MigrationReport(str(cm.config_path), "none")
            imported = done.gonka_db
            secrets_left = secrets_in(cm.loaded_document)
    if as_json:
        print_json(
            report.as_dict()
            if imported is None
            else {**report.as_dict(), "gonka_db": imported.as_dict()}
        )
        return
    if imported is not None:
        _print_gonka_db(imported)
    if report.action == "none":
        stdout.print(f"{report.config_path}: no dynamic keys; nothing to migrate", markup=False)
        return
    verb = {
        "dry_run": "would move",
        "migrated": "moved",
        "resumed": "finished moving",
        "ignored": "did NOT import (the state took a legacy import before; see --force)",
    }
    nodes = report.moved.get("nodes")
    count = f" ({len(nodes)} node(s))" if isinstance(nodes, list) else ""
    stdout.print(
        f"{report.config_path}: {verb[report.action]} {', '.join(report.keys)}{count}",
        markup=False,
    )
    if report.backup_path:
        stdout.print(f"backup: {report.backup_path}", markup=False)
    if report.state_backup:
        stdout.print(f"state backup: {report.state_backup}", markup=False)
    if report.action != "dry_run":
        _next_steps(report, secrets_left)


def _next_steps(report: legacy.MigrationReport, secrets_left: list[str]) -> None:
    """What to do next, for people (stderr: stdout carries the result only)."""
    if secrets_left:
        copy = f" and so does {report.backup_path}" if report.backup_path else ""
        typer.echo(
            f"note: the config file holds {', '.join(secrets_left)} in clear{copy}: "
            "`dapi-config secrets seal` moves it into sealed state; delete the copy once "
            "you have checked the migration",
            err=True,
        )
    typer.echo(
        "next: `dapi-config check`, then start the service (`dapi-config serve`); "
        "`dapi-config rollback` writes a file the old binary reads",
        err=True,
    )


def _print_gonka_db(report: legacy.GonkaDbReport) -> None:
    if report.action == "already":
        stdout.print(f"{report.source}: imported before; nothing to do", markup=False)
        return
    stdout.print(
        f"{report.source}: imported {report.nodes} node(s), {len(report.keys)} kv_config "
        f"key(s), {report.seeds} seed row(s), {report.openings} BLS dealer opening(s)",
        markup=False,
    )


@app.command()
def rollback(
    out: Annotated[
        str,
        typer.Option(
            "--out",
            help="Where to write the legacy single-file YAML (a directory: config-legacy.yaml "
            "in it).",
        ),
    ],
    force: OverwriteOpt = False,
    yaml_only: Annotated[
        bool,
        typer.Option(
            "--yaml-only",
            help="Write only the YAML file, also for a state upgraded from a gonka.db (to go "
            "back to a release of the YAML era).",
        ),
    ] = False,
    overwrite_changed_gonka_db: Annotated[
        bool,
        typer.Option(
            "--overwrite-changed-gonka-db",
            help="Bring the gonka.db up to date although it changed since the upgrade (a "
            "backup of it is taken first).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write what the predecessor needs to run on this state again.

    The legacy single-file YAML (static + dynamic) in the old writer's layout (sorted keys,
    4-space indentation), mode 0600 as it holds the worker key: point the old binary at it.
    For a state upgraded from a gonka.db, that file is brought up to date as well (nodes,
    heights, versions, plan, caches, seeds, worker key; a backup of it first), because its
    binary reads gonka.db, not the YAML. Stop the old binary before.

    Example: dapi-config --config config.yaml rollback --out /etc/dapi/config-legacy.yaml
    """
    with open_manager() as cm:
        try:
            report = cm.roll_back(
                out,
                force=force,
                yaml_only=yaml_only,
                overwrite_changed_gonka_db=overwrite_changed_gonka_db,
            )
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
    gonka = report.gonka_db
    if as_json:
        print_json({"yaml": str(report.yaml), "gonka_db": gonka.as_dict() if gonka else None})
        return
    stdout.print(str(report.yaml), markup=False)
    if gonka is not None and gonka.changed:
        stdout.print(
            f"{gonka.path}: brought up to date (kv: {', '.join(gonka.keys) or '-'}; "
            f"{len(gonka.nodes_written)} node(s) written, {len(gonka.nodes_deleted)} "
            f"deleted; seeds: {', '.join(gonka.seeds) or '-'}); the file as it was: "
            f"{gonka.backup}",
            markup=False,
        )
    elif gonka is not None:
        stdout.print(f"{gonka.path}: already up to date", markup=False)
