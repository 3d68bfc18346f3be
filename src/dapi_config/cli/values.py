"""``dapi-config state get|set|schedule|rotate-seeds``: every dynamic value on the command line,
by the names of :mod:`dapi_config.catalogue` (SPEC §15). ``state get KIND --json`` prints what
``GET /admin/v1/state/...`` answers; ``state get --json`` what ``GET /admin/v1/state`` answers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dapi_config._goyaml import render_go_yaml
from dapi_config._yaml import parse_yaml
from dapi_config.catalogue import BY_NAME, KINDS
from dapi_config.cli._common import (
    AtRevisionOpt,
    JsonOpt,
    fail,
    open_manager,
    print_json,
    state_app,
)
from dapi_config.cli._output import stdout
from dapi_config.errors import ConfigError

KIND_NAMES = ", ".join(kind.name for kind in KINDS)

schedule_app = typer.Typer(
    help="Add or remove a node version of the schedule.", no_args_is_help=True
)
state_app.add_typer(schedule_app, name="schedule")


def _kind(name: str) -> Any:
    kind = BY_NAME.get(name)
    if kind is None:
        raise fail(f"no state kind {name!r}; one of: {KIND_NAMES}")
    return kind


def _read_value(text: str) -> Any:
    """VALUE as given, the content of the file it names, or standard input (``-``): YAML, so
    JSON too."""
    source = "the value"
    if text == "-":
        text, source = sys.stdin.read(), "standard input"
    elif Path(text).is_file():
        source = text
        try:
            text = Path(text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"{source}: cannot read it: {exc}") from None
    try:
        return parse_yaml(text, source)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _show(data: Any) -> None:
    """``data`` as YAML (the layout of the config file), what ``state set`` reads back."""
    if isinstance(data, list):
        nested = render_go_yaml({"list": data}).splitlines()[1:]  # under a key, 4 deeper
        text = "\n".join(line[4:] for line in nested) if data else "[]"
    else:
        text = render_go_yaml(data)
    stdout.print(text.rstrip("\n"), markup=False, highlight=False)


@state_app.command("get")
def state_get(
    kind: Annotated[
        str | None,
        typer.Argument(metavar="[KIND]", help=f"One of: {KIND_NAMES}. Omitted: the whole state."),
    ] = None,
    at_revision: AtRevisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the dynamic state, or one kind of it (--at-revision: as it was then).

    Example: dapi-config state get upgrade-plan --json
    """
    with open_manager(read_only=True) as cm:
        if kind is None:
            data = cm.state_summary() if at_revision is None else cm.state_summary_at(at_revision)
        else:
            name = _kind(kind).name
            value = (
                cm.state_value(name)
                if at_revision is None
                else cm.state_value_at(name, at_revision)
            )
            data = value.model_dump(mode="json")
    if as_json:
        print_json(data)
    else:
        _show(data)


@state_app.command("set")
def state_set(
    kind: Annotated[str, typer.Argument(metavar="KIND", help=f"One of: {KIND_NAMES}.")],
    value: Annotated[
        str,
        typer.Argument(
            metavar="VALUE|FILE|-",
            help="The new value as YAML or JSON (a height may be a bare number), a file "
            "holding it, or - for standard input.",
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Replace one kind of the dynamic state, validated, in one transaction (a height applies
    the node-version schedule, as the service's set_height does).

    Example: dapi-config state set upgrade-plan '{name: v0.2.9, height: 1500000}'
    """
    found = _kind(kind)
    data = _read_value(value)
    if not isinstance(data, dict):
        data = found.from_document(data)  # a bare height, the schedule's list
    with open_manager() as cm:
        stored = cm.set_state_value(found.name, data).model_dump(mode="json")
    if as_json:
        print_json(stored)
    else:
        _show(stored)


@schedule_app.command("add")
def schedule_add(
    height: Annotated[int, typer.Argument(min=0, help="The height the version takes over at.")],
    version: Annotated[str, typer.Argument(help="The node version.")],
) -> None:
    """Schedule VERSION at HEIGHT (nothing changes when that pair is scheduled already).

    Example: dapi-config state schedule add 1500000 v0.2.9
    """
    with open_manager() as cm:
        added = cm.add_node_version(height, version)
    stdout.print(
        f"{version} at {height}: {'scheduled' if added else 'was scheduled already'}",
        markup=False,
    )


@schedule_app.command("remove")
def schedule_remove(
    height: Annotated[int, typer.Argument(min=0, help="The height it was scheduled at.")],
    version: Annotated[str, typer.Argument(help="The node version.")],
) -> None:
    """Take VERSION at HEIGHT off the schedule (exit 1 when it is not there).

    Example: dapi-config state schedule remove 1500000 v0.2.9
    """
    with open_manager() as cm:
        removed = cm.remove_node_version(height, version)
    if not removed:
        raise fail(f"no version {version!r} is scheduled at height {height}; nothing changed")
    stdout.print(f"{version} at {height}: removed from the schedule", markup=False)


@state_app.command("rotate-seeds")
def rotate_seeds() -> None:
    """Epoch change: previous <- current <- upcoming, upcoming cleared, in one transaction.

    Example: dapi-config state rotate-seeds
    """
    with open_manager() as cm:
        cm.rotate_seeds()
        seeds = cm.state_summary()["seeds"]
    _show(seeds)


@state_app.command("clear")
def state_clear(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="upgrade-plan")],
) -> None:
    """Clear a value that can be cleared (the upgrade plan: cancelled).

    Example: dapi-config state clear upgrade-plan
    """
    found = _kind(kind)
    if found.clear is None:
        names = ", ".join(k.name for k in KINDS if k.clear is not None)
        raise fail(f"{found.name} cannot be cleared (only: {names}); set it instead")
    with open_manager() as cm:
        _show(cm.clear_state_value(found.name).model_dump(mode="json"))


@state_app.command("worker-key")
def state_worker_key() -> None:
    """Create a new Ed25519 worker key pair, stored sealed in the state; prints the public key
    (the private key is never shown).

    Example: dapi-config state worker-key
    """
    with open_manager() as cm:
        public = cm.create_worker_key()
    stdout.print(public, markup=False)
