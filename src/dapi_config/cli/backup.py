"""``dapi-config backup``, ``backups``, ``restore``, ``check`` and ``recover`` (SPEC §10).

For a SQLite state, ``check``, ``restore`` and ``recover`` work on the state file's path without
opening the store: ``check`` must report a damaged file rather than repair it on the way in,
and ``restore`` must work when the live file is beyond use. A PostgreSQL state has no file to
repair: those commands go through the manager (its backups are SQLite snapshot files, SPEC §13).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dapi_config._logging import results_printed_elsewhere
from dapi_config.cli._common import (
    EXIT_FAILURE,
    DryRunOpt,
    JsonOpt,
    OverwriteOpt,
    YesOpt,
    app,
    cli_context,
    confirm,
    fail,
    open_manager,
    print_json,
    working,
)
from dapi_config.cli._output import stdout
from dapi_config.errors import ConfigError, DapiConfigError
from dapi_config.settings import parse_duration, parse_time
from dapi_config.static import load_static_config
from dapi_config.store import backup as backups_mod
from dapi_config.store import recovery
from dapi_config.store.sqlite import restore_state_file


def _state_path() -> Path:
    """The state file from --state / API_STATE_DB_PATH / the config file's directory."""
    return cli_context().state_file()


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@app.command()
def backup(
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Backup file, or directory (ending in /) [default: <state dir>/backups].",
        ),
    ] = None,
    force: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Take a verified online backup of the state (safe while the service runs).

    Prints the backup's path. Example: dapi-config backup --out /srv/backups/
    """
    with open_manager() as cm:
        try:
            target = None if out is None else cm.output_path(out, force=force)
            with working("backing up the state"):
                info = cm.backup(target)
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
    if as_json:
        print_json(info.to_dict())
    else:
        print(info.path)


@app.command("backups")
def backups_list(as_json: JsonOpt = False) -> None:
    """List the backups in <state dir>/backups, newest first, with age, size and schema version.

    Example: dapi-config backups --json
    """
    if cli_context().state_is_shared():
        with open_manager(read_only=True) as cm:
            where = cm.state_location
            infos = cm.list_backups()
    else:
        state = _state_path()
        where = str(state)
        try:
            infos = backups_mod.list_backups(
                backups_mod.backup_dir_for(state), state, cipher=cli_context().cipher()
            )
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
    if as_json:
        print_json([i.to_dict() for i in infos])
        return
    from rich.table import Table  # noqa: PLC0415 - rich on first use

    table = Table(title=f"{len(infos)} backup(s) of {where}")
    for column in ("path", "age", "size", "schema", "revision", "reason", "ok"):
        table.add_column(column, overflow="fold")  # restore needs the whole path
    for i in infos:
        table.add_row(
            str(i.path),
            _age(i.age_seconds()),
            f"{i.size:,}",
            str(i.schema_version),
            str(i.revision),
            i.reason,
            "yes" if i.ok else f"NO: {i.problem}",
        )
    stdout.print(table)


@app.command()
def restore(  # noqa: PLR0917 - Typer passes each option by position
    backup_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[BACKUP]",
            help="The backup to restore (or --to-revision / --to-time).",
            show_default=False,
        ),
    ] = None,
    to_revision: Annotated[
        int | None,
        typer.Option(
            "--to-revision",
            min=0,
            metavar="R",
            help="Bring the state back to how it was right after audit revision R.",
            show_default=False,
        ),
    ] = None,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            metavar="ISO-8601",
            help="Bring it back to the newest revision at or before this time "
            "(2026-12-07T13:40:00Z).",
            show_default=False,
        ),
    ] = None,
    include_keys: Annotated[
        bool,
        typer.Option(
            "--include-keys",
            help="With --to-revision/--to-time: also bring back the nodes' security keys as "
            "the newest backup at or before then holds them. Off by default: a key rotated "
            "since was rotated for a reason (a leak), and the nodes hold the new one.",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace the state with BACKUP, or bring it back to a revision or a time (point-in-time
    recovery); the current state is backed up first.

    A damaged backup is refused and nothing changes. Running services see the restored state
    at their next read. --dry-run shows what would change; on a terminal it asks first. A
    restore to a revision is itself an audit entry naming it; revisions keep increasing.
    Example: dapi-config restore --to-time 2026-12-07T13:40:00Z --dry-run
    """
    chosen = sum(x is not None for x in (backup_file, to_revision, to_time))
    if chosen != 1:
        raise fail("give one of BACKUP, --to-revision R or --to-time ISO-8601")
    if include_keys and backup_file is not None:
        raise fail("--include-keys goes with --to-revision or --to-time (a backup brings its keys)")
    if backup_file is None:
        _restore_to(
            to_revision,
            to_time,
            include_keys=include_keys,
            dry_run=dry_run,
            yes=yes,
            as_json=as_json,
        )
        return
    if dry_run or (not yes and sys.stdin.isatty()):
        try:
            with open_manager(read_only=True) as cm:
                changes = cm.preview_restore(backup_file)
        except (DapiConfigError, typer.Exit) as exc:
            if dry_run:
                raise
            # The live state may be beyond reading (why one restores): ask without a preview.
            changes = [f"(no preview: {exc})" if str(exc) else "(no preview)"]
        if dry_run:
            _print_changes(changes, as_json, "restoring it changes nothing")
            return
        _print_changes(changes, False, "restoring it changes nothing", err=True)
        confirm(f"restore {backup_file} over the current state?", yes=yes)
    if cli_context().state_is_shared():
        with (
            open_manager() as cm,
            working(f"restoring {backup_file}"),
            results_printed_elsewhere(),
        ):
            result = cm.restore_backup(backup_file)
    else:
        try:
            with working(f"restoring {backup_file}"), results_printed_elsewhere():
                result = restore_state_file(
                    _state_path(), backup_file, cipher=cli_context().cipher()
                )
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
    if as_json:
        print_json(result.to_dict())
        return
    print(f"restored {result.restored.path} (revision {result.restored.revision})")
    if result.pre_restore is not None:
        print(f"previous state backed up to {result.pre_restore.path}")
    if result.quarantine is not None:
        print(f"damaged state file moved to {result.quarantine}")
    typer.echo(
        "next: `dapi-config check`; running services already read the restored state "
        f"(to undo: dapi-config restore {result.pre_restore.path})"
        if result.pre_restore is not None
        else "next: `dapi-config check`; running services already read the restored state",
        err=True,
    )


def _restore_to(
    revision: int | None,
    when: str | None,
    *,
    include_keys: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """``restore --to-revision`` / ``--to-time``: a preview, a question, the restore."""
    with open_manager() as cm:
        if revision is None:
            revision = cm.revision_at_time(parse_time(when or "", "--to-time"))
        changes = cm.preview_restore_to_revision(revision)
        if dry_run:
            _print_changes(changes, as_json, f"restoring r{revision} changes nothing")
            return
        _print_changes(changes, False, f"restoring r{revision} changes nothing", err=True)
        confirm(f"bring the state back to revision {revision}?", yes=yes)
        with working(f"restoring revision {revision}"):
            restored = cm.restore_to_revision(revision, include_keys=include_keys)
    if as_json:
        print_json({"restored_revision": revision, "revision": restored, "changes": changes})
        return
    print(f"state brought back to revision {revision} (as revision {restored})")
    typer.echo(
        f"next: `dapi-config check --deep`; to undo: dapi-config restore --to-revision "
        f"{restored - 1}",
        err=True,
    )


def _print_changes(changes: list[str], as_json: bool, none: str, *, err: bool = False) -> None:
    """A preview: one line per change (--json: {"changes": [...]})."""
    if as_json:
        print_json({"changes": changes})
        return
    for line in changes or [none]:
        typer.echo(line, err=err)


def _default_max_age() -> float:
    return 2 * cli_context().settings.backup_interval


@app.command()
def check(
    max_backup_age: Annotated[
        str | None,
        typer.Option(
            "--max-backup-age",
            help="Oldest acceptable newest backup (3600, 30m, 2h) "
            "[default: twice API_BACKUP_INTERVAL, i.e. 2h].",
            show_default=False,
        ),
    ] = None,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also walk the audit trail's hash chain and compare every current value with "
            "the newest value the trail holds for it (reads the whole trail).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check the config file (it loads and validates) and the state file: integrity, schema
    version, permissions, backup freshness; with --deep, the audit trail too.

    Changes nothing. Exit 1 when there is a problem. Example: dapi-config check --deep --json
    """
    context = cli_context()
    shared = context.state_is_shared()
    state = None if shared else _state_path()
    config_problem: str | None = None
    read_as_before: list[str] = []
    try:
        loaded = load_static_config(context.config_file(), context.settings.static_env)
        read_as_before = loaded.predecessor_values
    except ConfigError as exc:
        config_problem = str(exc)
    try:
        limit = (
            parse_duration(max_backup_age, "--max-backup-age")
            if max_backup_age
            else _default_max_age()
        )
    except DapiConfigError as exc:
        raise fail(str(exc)) from None
    if state is None:
        with open_manager(read_only=True) as cm:
            result = cm.check(max_backup_age=limit)
    else:
        try:
            result = recovery.check_state(state, max_backup_age=limit, cipher=context.cipher())
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
    if deep and result.ok:  # a damaged state is not read further
        with open_manager(read_only=True) as cm:
            found = cm.deep_check()
        result.items.update(found.to_dict())
        result.problems.extend(found.problems)
    result.items["config"] = "ok" if config_problem is None else "invalid"
    if read_as_before:
        result.items["config_read_as_the_predecessor_read_it"] = read_as_before
    if config_problem is not None:
        result.problems.insert(0, config_problem)
    if as_json:
        print_json(result.to_dict())
    else:
        print(f"state: {result.state_path}" if state is None else f"state file: {state}")
        for key, value in result.items.items():
            shown = value
            if key == "newest_backup" and isinstance(value, dict):
                shown = f"{value['path']} ({_age(value['age_seconds'])} old)"
            elif isinstance(value, dict):  # seen on main: a Python dict, {'state.db': '0600'}
                shown = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
            elif isinstance(value, list):
                shown = "".join(f"\n  {item}" for item in value) or "-"
            print(f"{key}: {shown}")
        for problem in result.problems:
            print(f"PROBLEM: {problem}")
        print("ok" if result.ok else f"{len(result.problems)} problem(s)")
    if not result.ok:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def recover(dry_run: DryRunOpt = False, yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Check the state file and, if it is damaged, restore the newest good backup.

    The damaged file is moved to <state dir>/quarantine/ (never deleted). Start-up does the
    same automatically; this runs it on demand. --dry-run says what it would do; on a
    terminal it asks first. Example: dapi-config recover --dry-run
    """
    state = _state_path()
    try:
        plan = recovery.recovery_plan(state, cipher=cli_context().cipher())
    except DapiConfigError as exc:
        raise fail(str(exc)) from None
    if plan is not None:
        problem, good = plan
        what = (
            f"{state}: {problem}; would restore {good.path} (revision {good.revision}, taken "
            f"{good.created_at.isoformat()}) and move the damaged file to quarantine/"
            if good is not None
            else f"{state}: {problem}"
        )
        if dry_run:
            if as_json:
                print_json(
                    {
                        "sound": False,
                        "problem": problem,
                        "would_restore": None if good is None else good.to_dict(),
                    }
                )
            else:
                print(what)
            return
        typer.echo(what, err=True)
        confirm("recover it now?", yes=yes)
    elif dry_run:
        if as_json:
            print_json({"sound": True})
        else:
            print(f"{state}: sound; nothing to recover")
        return
    try:
        report = recovery.recover_if_damaged(state, cipher=cli_context().cipher())
    except DapiConfigError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(
            {"recovered": False}
            if report is None
            else {
                "recovered": True,
                "problem": report.problem,
                "restored": report.restored.to_dict(),
                "quarantine": None if report.quarantine is None else str(report.quarantine),
            }
        )
    elif report is None:
        print(f"{state}: sound; nothing to recover")
    else:
        print(report.message())
