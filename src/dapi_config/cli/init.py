"""``dapi-config init``: a new node's config file and empty state."""

from __future__ import annotations

import typer

from dapi_config.cli._common import app, cli_context, open_manager
from dapi_config.static import write_new_config


@app.command()
def init() -> None:
    """Write a new, commented config file (mode 0600) and an empty state beside it; an
    existing config is never overwritten.

    Example: dapi-config --config /etc/dapi/config.yaml init
    """
    written = write_new_config(cli_context().config_file())
    with open_manager() as cm:
        location = cm.state_location
        revision = cm.latest_revision()
    typer.echo(f"config: {written}")
    typer.echo(f"state: {location} (revision {revision})")
    typer.echo(
        f"next: edit {written.name} (chain_node.url, api.public_url), then "
        "`dapi-config serve`; a predecessor's config is upgraded with `dapi-config migrate` "
        "instead",
        err=True,
    )
