"""``dapi-config status``."""

from __future__ import annotations

import json

from dapi_config.cli._common import JsonOpt, app, open_manager, print_json
from dapi_config.cli._output import stdout


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Show height, node version, schedule, seeds, parameters and node count.

    Example: dapi-config --config config.yaml status --json
    """
    with open_manager(read_only=True) as cm:
        summary = cm.state_summary()
        summary["state_path"] = cm.state_location
        summary["config_path"] = str(cm.config_path)
    if as_json:
        print_json(summary)
        return
    from rich.table import Table  # noqa: PLC0415 - rich on first use

    table = Table(title="dapi-config state", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("config", summary["config_path"])
    table.add_row("state", summary["state_path"])
    table.add_row("height", str(summary["height"]))
    table.add_row("node version", summary["current_node_version"] or "-")
    schedule = ", ".join(f"{v['version']}@{v['height']}" for v in summary["node_versions"])
    table.add_row("schedule", schedule or "-")
    for kind, seed in summary["seeds"].items():
        table.add_row(
            f"{kind} seed",
            f"epoch {seed['epoch_index']} seed {seed['seed']}"
            + (" (claimed)" if seed["claimed"] else ""),
        )
    table.add_row("validation params", json.dumps(summary["validation_params"]))
    table.add_row("bandwidth params", json.dumps(summary["bandwidth_params"]))
    plan = summary["upgrade_plan"]
    table.add_row("upgrade plan", f"{plan['name']} at {plan['height']}" if plan["name"] else "-")
    table.add_row("nodes", str(summary["node_count"]))
    table.add_row("revision", str(summary["revision"]))
    stdout.print(table)
