"""What every command shares: the Typer apps, global options, opening the manager, output.

Errors are mapped here once, by the root group: any :class:`DapiConfigError` a command raises
becomes one ``error: ...`` line on stderr and exit code 1; usage errors exit 2 (Click's
convention). The global options and the environment's :class:`Settings` (read once, at the
first command that needs them) live on the Click context as a :class:`CliContext`.
"""

from __future__ import annotations

import contextvars
import enum
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from dapi_config import __version__
from dapi_config.cli._output import stderr
from dapi_config.cli._progress import long_operation
from dapi_config.errors import ConfigError, DapiConfigError
from dapi_config.settings import Settings

if TYPE_CHECKING:
    from dapi_config.manager import ConfigManager
    from dapi_config.store.sqlcipher import StateCipher

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

HELP = """Crash-safe configuration for dapi nodes: static YAML + an embedded SQLite state file.

Exit codes: 0 ok, 1 failure, 2 usage error. Results go to stdout; logs and errors to stderr.
"""


#: Global options that take a value, and flags: accepted before or after the command.
_GLOBAL_WITH_VALUE = ("--config", "-c", "--state", "--output", "-o")
_GLOBAL_FLAGS = ("--verbose", "-v", "-vv", "-vvv")


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the global options moved in front of the command, so that
    ``dapi-config status --config x.yaml`` means ``dapi-config --config x.yaml status``
    (as kubectl and etcdctl take their global flags anywhere). Nothing after ``--`` moves."""
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_WITH_VALUE and "=" in arg:
            hoisted.append(arg)
        elif arg in _GLOBAL_WITH_VALUE and index + 1 < len(args):
            hoisted.extend(args[index : index + 2])
            index += 1
        elif arg in _GLOBAL_FLAGS:
            hoisted.append(arg)
        else:
            rest.append(arg)
        index += 1
    return hoisted + rest


#: The root help's sections, in the order a newcomer needs them.
COMMAND_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Start", ("init", "migrate", "serve", "status", "check")),
    ("The state", ("nodes", "state", "edit", "audit", "export")),
    ("Backups and recovery", ("backup", "backups", "restore", "recover")),
    ("Security", ("tokens", "keys", "secrets", "encrypt", "decrypt", "rekey")),
    ("Back to the predecessor", ("rollback",)),
    ("Shell", ("completion",)),
)


def first_sentence(text: str) -> str:
    paragraph = " ".join(text.strip().split("\n\n", 1)[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


class _RootGroup(TyperGroup):
    """The root command group: the one place that maps product errors to exit code 1, that
    takes the global options in any position, and that makes this invocation's
    :class:`CliContext` (kept on the Click context) findable."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        return super().parse_args(ctx, hoist_global_options(args))

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # (Any: Typer's own copy of Click's Context and HelpFormatter.)
        """The commands in sections (what one does first, day to day, when things go wrong),
        each with the first sentence of its help, whole."""
        listed: set[str] = set()
        for section, names in COMMAND_SECTIONS:
            rows = []
            for name in names:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                listed.add(name)
                rows.append((name, first_sentence(command.help or command.short_help or "")))
            if rows:
                with formatter.section(section):
                    formatter.write_dl(rows)
        rest = [n for n in self.list_commands(ctx) if n not in listed]
        rows = [
            (name, first_sentence(command.help or ""))
            for name in rest
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Other commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        token = _CURRENT.set(ctx.ensure_object(CliContext))
        try:
            return super().invoke(ctx)
        except DapiConfigError as exc:
            raise fail(str(exc)) from None
        finally:
            _CURRENT.reset(token)


app = typer.Typer(
    cls=_RootGroup,
    help=HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    # -h as well as --help, on every command (Click passes it down to subcommands).
    context_settings={"help_option_names": ["-h", "--help"]},
)
nodes_app = typer.Typer(help="Inspect and edit the inference-node registry.", no_args_is_help=True)
app.add_typer(nodes_app, name="nodes")
secrets_app = typer.Typer(
    help="Move secrets out of the YAML file into sealed state.", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")
state_app = typer.Typer(
    help="Read and change the dynamic state (height, schedule, seeds, parameters, upgrade "
    "plan), or move it whole between backends.",
    no_args_is_help=True,
)
app.add_typer(state_app, name="state")


@dataclass
class CliContext:
    """The global options of this invocation and the settings read from the environment."""

    config: Path | None = None
    #: --state: a file path or a postgresql:// URL (kept as text: a Path would mangle "//").
    state: str | None = None
    #: -o/--output: how commands that print data print it (json and yaml imply --json).
    output: str = "table"
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The environment's settings, read once (raises :class:`ConfigError` for a bad
        variable; the root group turns that into one error line)."""
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def config_file(self) -> Path:
        """--config, else API_CONFIG_PATH, else ./config.yaml."""
        return self.settings.config_file(self.config)

    def state_is_shared(self) -> bool:
        """Whether the state is in PostgreSQL (a URL), not in a SQLite file."""
        return isinstance(self.settings.state_location(self.state, self.config_file()), str)

    def state_file(self) -> Path:
        """--state, else API_STATE_DB_PATH, else state.db beside the config file (commands on
        the SQLite file itself: backups, encryption). Raises :class:`ConfigError` for a
        PostgreSQL state."""
        location = self.settings.state_location(self.state, self.config_file())
        if isinstance(location, str):
            raise ConfigError(
                "this command works on a SQLite state file; the state is in PostgreSQL "
                f"({_redacted(location)}): use PostgreSQL's own tools for it"
            )
        return location

    def cipher(self) -> StateCipher | None:
        """The state file's SQLCipher key (API_STATE_ENCRYPTION), None for a plain file."""
        from dapi_config.store.sqlcipher import cipher_for  # noqa: PLC0415

        return cipher_for(self.settings)


def _redacted(url: str) -> str:
    from dapi_config.store.postgres import redact_url  # noqa: PLC0415 - psycopg at need

    return redact_url(url)


_CURRENT: contextvars.ContextVar[CliContext] = contextvars.ContextVar("dapi_config_cli")


def cli_context() -> CliContext:
    """The :class:`CliContext` of the running command."""
    return _CURRENT.get()


OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace an existing --out file (never one of dapi-config's own files).",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Static YAML file [env: API_CONFIG_PATH; default ./config.yaml].",
        show_default=False,
        # The loader checks the file and explains any problem itself (exit 1, not 2).
        readable=False,
    ),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        metavar="PATH|URL",
        help="SQLite state file, or postgresql://user@host/db [env: API_STATE_DB_PATH, "
        "API_STATE_URL; default state.db beside config].",
        show_default=False,
        readable=False,
    ),
]


class OutputFormat(enum.StrEnum):
    """How commands that print data print it (``-o``)."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def _json_if_asked(value: bool) -> bool:
    # -o json / -o yaml (a global option, parsed before the command's own) mean --json.
    return value or cli_context().output != "table"


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", callback=_json_if_asked, help="Print JSON for scripts (also: -o json|yaml)."
    ),
]
AtRevisionOpt = Annotated[
    int | None,
    typer.Option(
        "--at-revision",
        min=0,
        metavar="R",
        help="As it was right after audit revision R (see `dapi-config audit`).",
        show_default=False,
    ),
]

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Do not ask first (a terminal is asked; a script, whose stdin is not one, never).",
    ),
]


def confirm(question: str, *, yes: bool) -> None:
    """Ask ``question`` on a terminal (default no) before a destructive step; ``yes``, or a
    stdin that is not a terminal (a script), goes ahead without asking. A "no" is exit 1 with
    nothing changed."""
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm(question, default=False, err=True):
        raise fail("not confirmed: nothing was changed (--yes skips the question)")


def _version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    config: ConfigOpt = None,
    state: StateOpt = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="More log output on stderr (-vv for debug)."
        ),
    ] = 0,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--output",
            "-o",
            help="How commands that print data print it: table (people), json or yaml.",
        ),
    ] = OutputFormat.TABLE,
    _show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    context = cli_context()
    context.config, context.state, context.output = config, state, output.value
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    setup_logging(level)


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr, one line per record."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_dapi_config", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._dapi_config = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    stderr.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


@contextmanager
def open_manager(
    config: Path | None = None,
    state: str | None = None,
    *,
    actor: str = "cli",
    migrate_legacy: bool = True,
    read_only: bool = False,
) -> Iterator[ConfigManager]:
    """Open the manager for a command, mapping every product error to one stderr line + exit 1.

    ``actor`` is recorded in the audit rows of its writes (``serve`` passes ``api``).
    """
    context = cli_context()
    try:
        # The first open of a legacy file migrates it: with a large file, that takes a while.
        with long_operation(
            f"opening {config or context.config_file()}",
            interval=context.settings.progress_interval,
        ):
            from dapi_config.manager import ConfigManager  # noqa: PLC0415 - at need

            cm = ConfigManager.open(
                config or context.config,
                state or context.state,
                actor=actor,
                settings=context.settings,
                migrate_legacy=migrate_legacy,
                read_only=read_only,
            )
        with cm:
            yield cm
    except DapiConfigError as exc:
        raise fail(str(exc)) from None


def working(what: str) -> AbstractContextManager[None]:
    """Say that ``what`` is running until the block ends (:func:`long_operation`, at the
    settings' ``DAPI_CONFIG_PROGRESS_INTERVAL`` off a terminal)."""
    return long_operation(what, interval=cli_context().settings.progress_interval)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout (and nothing else); as YAML with ``-o yaml``."""
    if cli_context().output == "yaml":
        from ruamel.yaml import YAML  # noqa: PLC0415 - only for -o yaml

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment] # the JSON's order
        yaml.dump(json.loads(json.dumps(data)), sys.stdout)  # plain types only
        return
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
