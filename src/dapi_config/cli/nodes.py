"""``dapi-config nodes ...``: the inference-node registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dapi_config.cli._common import JsonOpt, fail, nodes_app, open_manager, print_json, stdout
from dapi_config.errors import DapiConfigError


@nodes_app.command("list")
def nodes_list(as_json: JsonOpt = False) -> None:
    """List the registered inference nodes.

    Example: dapi-config nodes list --json
    """
    with open_manager() as cm:
        nodes = cm.get_nodes()
    if as_json:
        print_json([n.model_dump(mode="json") for n in nodes])
        return
    table = Table(title=f"{len(nodes)} inference node(s)")
    for column in ("id", "host", "inference", "poc", "models", "max", "version", "enabled"):
        table.add_column(column)
    for n in nodes:
        table.add_row(
            n.id,
            n.host,
            f"{n.inference_segment or '/'}:{n.inference_port}",
            f"{n.poc_segment or '/'}:{n.poc_port}",
            ", ".join(n.models) or "-",
            str(n.max_concurrent),
            n.version or "-",
            "yes" if n.is_enabled else "no",
        )
    stdout.print(table)


@nodes_app.command("import")
def nodes_import(
    file: Annotated[Path, typer.Argument(help="JSON list of nodes (NODE_CONFIG_PATH format).")],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the whole registry with the file's nodes.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply a node file to the registry, all or nothing.

    Without --replace the file's nodes are added and an id that is already registered stops
    the import; with --replace the registry becomes exactly the file's nodes.

    Example: dapi-config nodes import node-config.json --replace
    """
    with open_manager() as cm:
        try:
            nodes = cm.import_nodes_file(file, replace=replace)
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
    if as_json:
        print_json([n.model_dump(mode="json") for n in nodes])
        return
    verb = "registry replaced by" if replace else "imported"
    stdout.print(f"{verb} {len(nodes)} node(s) from {file}", markup=False)
