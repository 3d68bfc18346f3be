"""``dapi-config export``: write the full config once."""

from __future__ import annotations

from typing import Annotated

import typer

from dapi_config.cli._common import JsonOpt, OverwriteOpt, app, fail, open_manager, print_json
from dapi_config.errors import DapiConfigError
from dapi_config.export import EXPORT_FILENAME, export_once


@app.command("export")
def export_command(
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="File to write [default: api-config-full.yaml beside the config]; - for stdout.",
            show_default=False,
        ),
    ] = None,
    include_secrets: Annotated[
        bool,
        typer.Option("--include-secrets", help="Write secrets instead of <redacted>."),
    ] = False,
    force: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the merged static + dynamic config in the legacy single-file layout (0600, atomic).

    Prints the path written. Example: dapi-config --config config.yaml export --out full.yaml
    """
    from dapi_config.export import render_legacy_yaml  # noqa: PLC0415

    with open_manager(read_only=True) as cm:
        if out is not None and str(out) == "-":
            text = render_legacy_yaml(cm.export_full_config(include_secrets=include_secrets))
            typer.echo(text, nl=False)
            return
        try:
            target = (
                None
                if out is None
                else cm.output_path(out, force=force, default_name=EXPORT_FILENAME)
            )
            written = export_once(cm, target, include_secrets=include_secrets)
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            raise fail(f"{exc.filename or out}: cannot write the export: {exc.strerror}") from None
    if as_json:
        print_json({"path": str(written), "include_secrets": include_secrets})
    else:
        typer.echo(str(written))
