"""``dapi-config keys ...``: per-node security keys and the master key."""

from __future__ import annotations

from typing import Annotated

import typer

from dapi_config.cli._common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    app,
    confirm,
    open_manager,
    print_json,
)
from dapi_config.cli._output import stdout
from dapi_config.models import IssuedSecurityKey

keys_app = typer.Typer(
    help="Per-node security keys (stored encrypted; shown in full only when issued).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

NodeArg = Annotated[str, typer.Argument(help="The inference node's id.", show_default=False)]


def _print_issued(issued: IssuedSecurityKey, as_json: bool) -> None:
    if as_json:
        print_json(issued.model_dump(mode="json"))
        return
    # The key alone on stdout, so `KEY=$(dapi-config keys rotate n1)` works; the rest on stderr.
    typer.echo(issued.security_key)
    typer.echo(
        f"node {issued.node_id}: security key version {issued.key_version} "
        f"({issued.fingerprint}); it is shown only now, store it safely",
        err=True,
    )


@keys_app.command("create")
def keys_create(node_id: NodeArg, as_json: JsonOpt = False) -> None:
    """Create a node's first security key and print it (shown only this once).

    Example: dapi-config keys create node-1 --json
    """
    with open_manager() as cm:
        issued = cm.create_security_key(node_id)
    _print_issued(issued, as_json)


@keys_app.command("rotate")
def keys_rotate(
    node_id: NodeArg, dry_run: DryRunOpt = False, yes: YesOpt = False, as_json: JsonOpt = False
) -> None:
    """Replace a node's security key (version + 1) and print the new one; the old one stops
    working at once. --dry-run says what would change; on a terminal it asks first.

    Example: KEY=$(dapi-config keys rotate node-1 --yes)
    """
    with open_manager() as cm:
        current = cm.get_security_key_info(node_id)
        what = (
            f"node {node_id}: security key version {current.key_version} "
            f"({current.fingerprint}) would be replaced by version {current.key_version + 1}; "
            "the old key stops verifying at once"
        )
        if dry_run:
            _print_plan(what, as_json, current.model_dump(mode="json"))
            return
        typer.echo(what, err=True)
        confirm(f"rotate the security key of {node_id}?", yes=yes)
        issued = cm.rotate_security_key(node_id)
    _print_issued(issued, as_json)


def _print_plan(what: str, as_json: bool, current: dict[str, object]) -> None:
    if as_json:
        print_json({"would": what, "current": current})
    else:
        typer.echo(what)


@keys_app.command("delete")
def keys_delete(
    node_id: NodeArg, dry_run: DryRunOpt = False, yes: YesOpt = False, as_json: JsonOpt = False
) -> None:
    """Revoke a node's security key. --dry-run says what would change; on a terminal it asks
    first.

    Example: dapi-config keys delete node-1 --yes
    """
    with open_manager() as cm:
        current = cm.get_security_key_info(node_id)
        what = (
            f"node {node_id}: security key version {current.key_version} "
            f"({current.fingerprint}) would be revoked; it stops verifying at once"
        )
        if dry_run:
            _print_plan(what, as_json, current.model_dump(mode="json"))
            return
        typer.echo(what, err=True)
        confirm(f"revoke the security key of {node_id}?", yes=yes)
        info = cm.delete_security_key(node_id)
    if as_json:
        print_json(info.model_dump(mode="json"))
    else:
        typer.echo(f"revoked security key version {info.key_version} of node {info.node_id}")


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List the nodes' key versions and fingerprints (never the keys).

    Example: dapi-config keys list --json
    """
    with open_manager() as cm:
        infos = cm.get_security_keys()
    if as_json:
        print_json([i.model_dump(mode="json") for i in infos])
        return
    from rich.table import Table  # noqa: PLC0415 - rich on first use

    table = Table(title=f"{len(infos)} security key(s)")
    for column in ("node", "version", "fingerprint", "created", "rotated"):
        table.add_column(column)
    for i in infos:
        table.add_row(i.node_id, str(i.key_version), i.fingerprint, i.created_at, i.updated_at)
    stdout.print(table)


@keys_app.command("check")
def keys_check(as_json: JsonOpt = False) -> None:
    """Check that the master key (API_STATE_KEY or the key file) opens the stored secrets.

    Example: API_STATE_KEY=... dapi-config keys check
    """
    with open_manager() as cm:
        source = cm.check_master_key()
    if as_json:
        print_json({"ok": True, "source": source})
    else:
        typer.echo(f"ok: master key from {source}")
