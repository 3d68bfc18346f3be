"""``dapi-config nodes ...``: the inference-node registry."""

from __future__ import annotations

from rich.table import Table

from dapi_config.cli._common import JsonOpt, nodes_app, open_manager, print_json, stdout


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
