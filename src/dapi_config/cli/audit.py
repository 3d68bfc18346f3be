"""``dapi-config audit``: the audit trail of state changes."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated, Any

import typer

from dapi_config.cli._common import JsonOpt, app, open_manager, print_json
from dapi_config.manager import AUDIT_PAGE_MAX
from dapi_config.store import AuditEntry

#: How long --follow waits for a change before looking again (it returns at once on one).
FOLLOW_WAIT_S = 5.0

_CELL = 120


def _short(value: Any) -> str:
    text = "-" if value is None else json.dumps(value, sort_keys=True)
    return text if len(text) <= _CELL else text[: _CELL - 3] + "..."


@app.command()
def audit(  # noqa: PLR0917 - Typer passes each option by position
    since: Annotated[
        int | None,
        typer.Option(
            "--since",
            min=0,
            help="Page forward: the first rows after this revision [default: the newest rows].",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=AUDIT_PAGE_MAX, help="At most this many rows.")
    ] = 100,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing changes as they commit (JSON: one object per line) until "
            "interrupted.",
        ),
    ] = False,
    actor: Annotated[
        str | None,
        typer.Option("--actor", help="Only this actor's changes (cli, api, api:NAME, ...)."),
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action (remove_node, ...).")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Only changes of this target (a node id, ...).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show recorded state changes: revision, time, actor, action, old -> new; the newest
    --limit of them, or with --since the first ones after that revision (page forward with the
    last revision shown, as --json's next_since). Always in revision order.

    --actor, --action and --target show only the changes with exactly that value (combined:
    all of them). Secrets appear only as fingerprints. --follow prints changes as they commit (after
    --since; 0 prints the whole trail first). --json is the HTTP reply's shape:
    {"entries", "next_since", "latest_revision"}.
    Example: dapi-config audit --since 1200 --limit 50 --json
    """
    with open_manager(read_only=True) as cm:
        if not follow:
            entries = cm.get_audit(
                since=since or 0,
                limit=limit,
                newest=since is None,
                actor=actor,
                action=action,
                target=target,
            )
            if as_json:
                print_json(
                    {
                        "entries": [asdict(e) for e in entries],
                        "next_since": entries[-1].revision if entries else (since or 0),
                        "latest_revision": cm.latest_revision(),
                    }
                )
                return
            for e in entries:
                _print(e)
            return
        since = since or 0
        try:
            while True:
                latest = cm.latest_revision()
                entries = cm.get_audit(
                    since=since, limit=AUDIT_PAGE_MAX, actor=actor, action=action, target=target
                )
                for e in entries:
                    if as_json:
                        typer.echo(json.dumps(asdict(e)))
                    else:
                        _print(e)
                if entries:
                    sys.stdout.flush()
                if len(entries) == AUDIT_PAGE_MAX:
                    since = entries[-1].revision  # more to print at once
                    continue
                # Every matching change up to `latest` is printed: wait past it (the rows in
                # between, if any, are other actors', actions' or targets').
                since = max(since, latest, entries[-1].revision if entries else 0)
                cm.wait_for_revision(since, timeout=FOLLOW_WAIT_S)
        except KeyboardInterrupt:
            return


def _print(e: AuditEntry) -> None:
    # One line per change (greppable, never wrapped): rev time actor action target: old -> new
    undone = "" if e.undone_by is None else f" (undone by r{e.undone_by})"
    typer.echo(
        f"r{e.revision} {e.at} {e.actor} {e.action} {e.target}: "
        f"{_short(e.old_value)} -> {_short(e.new_value)}{undone}"
    )
