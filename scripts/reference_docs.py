"""Write the reference tables of ``docs/`` from the code itself, so they cannot drift:
``docs/http-api.md`` from the service's OpenAPI document and route roles, ``docs/cli.md`` from
the command tree and its sections.

    .venv/bin/python scripts/reference_docs.py           # rewrite both
    .venv/bin/python scripts/reference_docs.py --check   # exit 1 when one is stale (a test)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from dapi_config import ConfigManager
from dapi_config.api import create_app
from dapi_config.api.roles import role_for
from dapi_config.cli import app as cli_app
from dapi_config.cli._common import COMMAND_SECTIONS, first_sentence

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_METHODS = ("get", "put", "post", "patch", "delete")
_PUBLIC = {"/livez", "/healthz", "/readyz", "/metrics"}

HTTP_HEAD = """# The HTTP API, route by route

Written by `scripts/reference_docs.py` from the service's own OpenAPI document (a test fails
when this file differs from what it writes). Every route, its method, the least token role
that may call it (see "Security" in the README; `-`: no token) and what it does. The
interactive forms are `/docs` and `/redoc` on a running service, the schema `/openapi.json`.

| Method | Path | Role | What it does |
|---|---|---|---|
"""

CLI_HEAD = """# The command line, command by command

Written by `scripts/reference_docs.py` from the commands themselves (a test fails when this
file differs from what it writes), in the sections of `dapi-config --help`. Every command
takes `-h`; the global options (`--config`, `--state`, `-o json|yaml|table`, `-v`) go before
or after it.

"""


def http_api_markdown() -> str:
    """The routes table, from the OpenAPI document of an app on a throwaway state."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text((ROOT / "examples" / "config.yaml").read_text())
        with ConfigManager.open(config, env={}) as cm:
            spec = create_app(cm).openapi()
    rows = []
    for path, item in spec["paths"].items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            role = "-" if path in _PUBLIC else role_for(operation["operationId"]).label
            summary = operation.get("summary", "").replace("|", "\\|")
            rows.append(f"| {method.upper()} | `{path}` | {role} | {summary} |")
    return HTTP_HEAD + "\n".join(rows) + "\n"


def _commands(group: Any, ctx: Any, prefix: str) -> list[tuple[str, str]]:
    """Each command under ``group`` (a Typer group: Typer carries its own copy of Click)."""
    rows = []
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        full = f"{prefix} {name}"
        if hasattr(command, "list_commands"):
            rows.extend(_commands(command, ctx, full))
        else:
            text = first_sentence(command.help or command.short_help or "")
            rows.append((full, text.replace("|", "\\|")))
    return rows


def cli_markdown() -> str:
    """The commands table, section by section as ``--help`` lists them."""
    root: Any = typer.main.get_command(cli_app)
    ctx = root.make_context("dapi-config", [], resilient_parsing=True)
    out = [CLI_HEAD]
    for section, names in COMMAND_SECTIONS:
        out.append(f"## {section}\n\n| Command | What it does |\n|---|---|\n")
        for name in names:
            command = root.get_command(ctx, name)
            if command is None:
                continue
            if hasattr(command, "list_commands"):
                rows = _commands(command, ctx, f"dapi-config {name}")
            else:
                rows = [(f"dapi-config {name}", first_sentence(command.help or ""))]
            out.extend(f"| `{usage}` | {text} |\n" for usage, text in rows)
        out.append("\n")
    return "".join(out).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = parser.parse_args()
    stale = []
    for path, text in (
        (DOCS / "http-api.md", http_api_markdown()),
        (DOCS / "cli.md", cli_markdown()),
    ):
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run scripts/reference_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
