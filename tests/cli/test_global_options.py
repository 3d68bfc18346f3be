"""Global options in either position, and an example in every command's help (operator
experience). Reproduced first: ``dapi-config status --config examples/config.yaml`` was
``No such option: --config``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from dapi_config.cli import app
from dapi_config.cli._common import hoist_global_options
from tests.conftest import run_cli

NODE = '{"id": "n1", "host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080}'


def _commands(command: Any, path: list[str]) -> Iterator[list[str]]:
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, [*path, name])
    else:
        yield path


def test_every_command_has_an_example_in_its_help() -> None:
    runner = CliRunner()
    paths = list(_commands(typer.main.get_command(app), []))
    assert len(paths) >= 25
    missing = [
        " ".join(p) for p in paths if "Example" not in runner.invoke(app, [*p, "--help"]).output
    ]
    assert missing == []


def test_global_options_work_before_and_after_the_command(config_file: Path) -> None:
    state = config_file.parent / "other.db"
    assert run_cli("--config", str(config_file), "--state", str(state), "nodes", "add", "-",
                   input=NODE).returncode == 0  # fmt: skip
    expected = None
    for args in (
        ("--config", str(config_file), "--state", str(state), "status", "--json"),
        ("status", "--config", str(config_file), "--state", str(state), "--json"),
        ("status", "--json", "-c", str(config_file), f"--state={state}", "-v"),
        ("-v", "status", f"--config={config_file}", "--json", "--state", str(state)),
    ):
        result = run_cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        summary = json.loads(result.stdout)
        assert summary["node_count"] == 1, args
        expected = expected or summary["state_path"]
        assert summary["state_path"] == expected == str(state)
    listed = run_cli("nodes", "list", "--json", "--config", str(config_file), "--state", str(state))
    assert [n["id"] for n in json.loads(listed.stdout)] == ["n1"]


def test_hoisting_keeps_everything_else_in_place() -> None:
    assert hoist_global_options(["status", "--config", "x", "--json"]) == [
        "--config", "x", "status", "--json",
    ]  # fmt: skip
    assert hoist_global_options(["nodes", "add", "-", "-v", "--", "--config"]) == [
        "-v", "nodes", "add", "-", "--", "--config",
    ]  # fmt: skip
    assert hoist_global_options(["backup", "--out", "--config"]) == [
        "backup",
        "--out",
        "--config",
    ]  # fmt: skip  (a trailing --config without a value is left for the parser to report)


def test_help_never_breaks_an_option_name_or_repeats_a_default() -> None:
    """Seen on main: ``rekey --help`` printed its default twice and wrapped ``--new-key-env``
    across two lines."""
    import re

    runner = CliRunner()
    for path in _commands(typer.main.get_command(app), []):
        text = runner.invoke(app, [*path, "--help"], terminal_width=80).output
        assert not re.search(r"--[A-Za-z][A-Za-z-]*-\n\s*[a-z]", text), " ".join(path)
        assert not re.search(r"\[default: ([^\]]+)\][^\[]*\[default: \1\]", text), path


def test_shell_completion_is_offered() -> None:
    import subprocess
    import sys

    script = str(Path(sys.executable).with_name("dapi-config"))  # the installed command
    # Typer with shellingham detects the shell from the process tree (in CI a `sh` above
    # pytest) and ignores the value; its own test switch makes it take the value instead.
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = subprocess.run(
        [script, "--show-completion", "bash"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "_dapi_config_completion" in result.stdout and "complete " in result.stdout
