"""``dapi-config tokens ...``: scoped API tokens (SPEC §11)."""

from __future__ import annotations

from typing import Annotated

import typer

from dapi_config.cli._common import JsonOpt, app, open_manager, print_json
from dapi_config.cli._output import stdout

tokens_app = typer.Typer(
    help="API tokens with a role (read, write, admin): shown once, kept as a hash, revocable "
    "without a restart.",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")

NameArg = Annotated[
    str,
    typer.Argument(help="The token's name (shown in the audit as api:NAME).", show_default=False),
]


@tokens_app.command("create")
def tokens_create(
    name: NameArg,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="read: GET only; write: change the state, not keys, tokens or backups; "
            "admin: everything.",
        ),
    ] = "read",
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it: it is shown this once (the state keeps its SHA-256).
    Once any token exists, every /admin/v1 request needs one.

    Example: TOKEN=$(dapi-config tokens create grafana --role read)
    """
    with open_manager() as cm:
        created = cm.create_token(name, role)
    if as_json:
        print_json(created.to_dict())
        return
    # The token alone on stdout, so `TOKEN=$(dapi-config tokens create ...)` works.
    typer.echo(created.token)
    typer.echo(
        f"token {created.info.name!r} ({created.info.role.label}) created; it is shown only "
        "now: store it safely (send it as Authorization: Bearer <token>)",
        err=True,
    )


@tokens_app.command("list")
def tokens_list(as_json: JsonOpt = False) -> None:
    """List the tokens: names, roles, created, last used (never the tokens).

    Example: dapi-config tokens list --json
    """
    with open_manager() as cm:
        infos = cm.list_tokens()
    if as_json:
        print_json([i.to_dict() for i in infos])
        return
    from rich.table import Table  # noqa: PLC0415 - rich on first use

    table = Table(title=f"{len(infos)} token(s)")
    for column in ("name", "role", "created", "last used"):
        table.add_column(column)
    for i in infos:
        table.add_row(i.name, i.role.label, i.created_at, i.last_used_at or "never")
    stdout.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: NameArg, as_json: JsonOpt = False) -> None:
    """Revoke a token: every service on this state refuses it from its next request.

    Example: dapi-config tokens revoke grafana
    """
    with open_manager() as cm:
        info = cm.revoke_token(name)
    if as_json:
        print_json(info.to_dict())
    else:
        typer.echo(f"revoked token {info.name!r} ({info.role.label})")
