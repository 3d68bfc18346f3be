"""``dapi-config nodes ...``: the inference-node registry."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dapi_config.cli._common import (
    AtRevisionOpt,
    DryRunOpt,
    JsonOpt,
    YesOpt,
    confirm,
    fail,
    nodes_app,
    open_manager,
    print_json,
    working,
)
from dapi_config.cli._output import print_table, stdout
from dapi_config.errors import DapiConfigError, NodeNotFoundError
from dapi_config.manager import MAX_NODE_PAGE, matching, page_of
from dapi_config.models import InferenceNodeConfig, NodeInput
from dapi_config.node_import import parse_node_input


@nodes_app.command("list")
def nodes_list(
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, max=MAX_NODE_PAGE, help="At most this many nodes."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Start after this node id (page with the last one shown)."),
    ] = None,
    match: Annotated[
        str | None,
        typer.Option(
            "--filter", help="Only nodes whose id, address, models or version contain this."
        ),
    ] = None,
    at_revision: AtRevisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the registered inference nodes, in registration order.

    Example: dapi-config nodes list --filter Qwen --limit 50 --json
    """
    with open_manager(read_only=True) as cm:
        if at_revision is not None:
            past = cm.nodes_at(at_revision)
            nodes = _page(past if match is None else matching(past, match), limit, after)
        elif match is not None:
            nodes = _page(cm.find_nodes(match), limit, after)
        elif limit is not None or after is not None:
            nodes = cm.get_nodes_page(limit=limit or MAX_NODE_PAGE, after=after)
        else:
            nodes = cm.get_nodes()
    if as_json:
        print_json([n.model_dump(mode="json") for n in nodes])
        return
    print_table(
        f"{len(nodes)} inference node(s)",
        ("id", "address", "models", "max", "version", "enabled"),
        [
            (
                n.id,
                _address(n),
                ", ".join(n.models) or "-",
                str(n.max_concurrent),
                n.version or "-",
                "yes" if n.is_enabled else "no",
            )
            for n in nodes
        ],
    )


def _page(
    nodes: list[InferenceNodeConfig], limit: int | None, after: str | None
) -> list[InferenceNodeConfig]:
    try:
        return page_of(nodes, limit, after)
    except NodeNotFoundError:
        raise fail(f"--after {after!r}: no such node among those listed") from None


def _address(node: InferenceNodeConfig) -> str:
    """Where the node is reached: its base URL, or host, ports and segments."""
    if node.base_url or node.url:
        return node.base_url or node.url
    inference = f"{node.host}:{node.inference_port}{node.inference_segment}"
    return f"{inference}, poc :{node.poc_port}{node.poc_segment}"


@nodes_app.command("get")
def nodes_get(node_id: NodeIdArg, as_json: JsonOpt = True) -> None:
    """Print one node as JSON (secrets redacted; --json is accepted, as on every read).

    Example: dapi-config nodes get n1 > n1.json
    """
    del as_json  # always JSON: the form `nodes update` reads back
    with open_manager(read_only=True) as cm:
        print_json(cm.get_node(node_id).model_dump(mode="json"))


@nodes_app.command("import")
def nodes_import(
    file: Annotated[
        str,
        typer.Argument(
            help="Nodes as JSON (a NODE_CONFIG_PATH file) or YAML: a list, or one node; "
            "- reads stdin.",
            show_default=False,
        ),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the whole registry with the file's nodes.")
    ] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply a node file to the registry, all or nothing.

    Without --replace the file's nodes are added and an id that is already registered stops
    the import; with --replace the registry becomes exactly the file's nodes (--dry-run lists
    what would be added, changed and removed; on a terminal it asks first).

    Example: dapi-config nodes import node-config.json --replace --dry-run
    """
    data = None
    if file == "-":
        file, data = "stdin", sys.stdin.buffer.read()
    with open_manager() as cm:
        if dry_run or replace:
            try:
                changes = cm.preview_nodes_import(file, replace=replace, data=data)
            except DapiConfigError as exc:
                raise fail(str(exc)) from None
            if dry_run:
                if as_json:
                    print_json({"changes": changes})
                else:
                    for line in changes or ["nothing would change"]:
                        typer.echo(line)
                return
            removed = sum(1 for line in changes if line.endswith(": removed"))
            for line in changes:
                typer.echo(line, err=True)
            confirm(
                f"replace the registry ({len(changes)} change(s), {removed} removal(s))?",
                yes=yes,
            )
        try:
            with working(f"importing {file}"):
                nodes = cm.import_nodes_file(file, replace=replace, data=data)
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
    if as_json:
        print_json([n.model_dump(mode="json") for n in nodes])
        return
    verb = "registry replaced by" if replace else "imported"
    stdout.print(f"{verb} {len(nodes)} node(s) from {file}", markup=False)


NodeIdArg = Annotated[str, typer.Argument(help="The node's id.", show_default=False)]


def _read_nodes(source: str) -> tuple[list[NodeInput], bool]:
    """The nodes in FILE (or stdin for ``-``), and whether one was given alone."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise fail(f"{source}: cannot read: {exc.strerror}") from None
    try:
        return parse_node_input(raw, "stdin" if source == "-" else source)
    except DapiConfigError as exc:
        raise fail(str(exc)) from None


NodesSource = Annotated[
    str,
    typer.Argument(
        metavar="FILE|-",
        help="JSON or YAML file with one node or a list of nodes; - reads stdin.",
        show_default=False,
    ),
]


@nodes_app.command("add")
def nodes_add(source: NodesSource, as_json: JsonOpt = False) -> None:
    """Register one node, or a list of nodes all or nothing; prints what was added (--json:
    the stored nodes).

    Safe while the service runs (one transaction on the state file).
    Example: echo '{"id": "n1", "host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080}'
    | dapi-config nodes add -
    """
    nodes, alone = _read_nodes(source)
    with open_manager() as cm:
        stored = [cm.add_node(nodes[0])] if alone else cm.add_nodes(nodes)
    _report("added", stored, as_json, alone)


@nodes_app.command("update")
def nodes_update(source: NodesSource, as_json: JsonOpt = False) -> None:
    """Replace registered nodes in place (each must exist), all or nothing; their security
    keys stay. Prints what was updated (--json: the stored nodes).

    Example: dapi-config nodes get n1 > n1.json; edit it; dapi-config nodes update n1.json
    """
    nodes, alone = _read_nodes(source)
    with open_manager() as cm, cm.transaction():
        stored = [cm.update_node(node) for node in nodes]
    _report("updated", stored, as_json, alone)


def _report(verb: str, nodes: list[InferenceNodeConfig], as_json: bool, alone: bool) -> None:
    if as_json:
        dumped = [n.model_dump(mode="json") for n in nodes]
        print_json(dumped[0] if alone else dumped)
        return
    ids = ", ".join(n.id for n in nodes[:10]) + (
        f" and {len(nodes) - 10} more" if len(nodes) > 10 else ""
    )
    stdout.print(f"{verb} {len(nodes)} node(s): {ids}", markup=False)


NodeIdsArg = Annotated[
    list[str], typer.Argument(help="The nodes' ids (one or more).", show_default=False)
]


@nodes_app.command("remove")
def nodes_remove(node_ids: NodeIdsArg, as_json: JsonOpt = False) -> None:
    """Remove nodes (and their security keys), all or nothing; --json prints what was removed.

    Example: dapi-config nodes remove n1 n2
    """
    with open_manager() as cm:
        removed = cm.remove_nodes(node_ids)
    _report("removed", removed, as_json, alone=len(node_ids) == 1)


def _set_enabled(node_ids: list[str], enabled: bool, as_json: bool) -> None:
    with open_manager() as cm, cm.transaction():
        nodes = [cm.set_node_enabled(node_id, enabled) for node_id in node_ids]
    verb = "enabled" if enabled else "disabled"
    if len(nodes) == 1 and not as_json:
        stdout.print(f"node {nodes[0].id} {verb}", markup=False)
        return
    _report(verb, nodes, as_json, alone=len(nodes) == 1)


@nodes_app.command("enable")
def nodes_enable(node_ids: NodeIdsArg, as_json: JsonOpt = False) -> None:
    """Mark nodes enabled, all or nothing. Example: dapi-config nodes enable n1 n2"""
    _set_enabled(node_ids, True, as_json)


@nodes_app.command("disable")
def nodes_disable(node_ids: NodeIdsArg, as_json: JsonOpt = False) -> None:
    """Mark nodes disabled, all or nothing. Example: dapi-config nodes disable n1"""
    _set_enabled(node_ids, False, as_json)
