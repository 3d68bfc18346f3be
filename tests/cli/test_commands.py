"""The command line as a user runs it: real subprocesses, stdout only for results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.cli import app
from tests.conftest import run_cli


def test_status_json_is_the_only_stdout(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node_version(50, "v2")
        cm.set_height(42)
    result = run_cli("--config", str(config_file), "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # nothing but JSON on stdout
    assert data["height"] == 42
    assert data["current_node_version"] == ""
    assert data["node_versions"] == [{"height": 50, "version": "v2"}]
    assert data["node_count"] == 0
    assert set(data["seeds"]) == {"current", "previous", "upcoming"}


def test_status_table_for_people(config_file: Path) -> None:
    ConfigManager.open(config_file).close()  # status only looks: the state must exist
    result = run_cli("--config", str(config_file), "status")
    assert result.returncode == 0, result.stderr
    assert "height" in result.stdout
    assert "node version" in result.stdout


def test_env_config_path(config_file: Path) -> None:
    ConfigManager.open(config_file).close()
    result = run_cli("status", "--json", env={"API_CONFIG_PATH": str(config_file)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config_path"] == str(config_file)


def test_nodes_list(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(
            InferenceNodeConfig(id="n1", host="10.0.0.1", inference_port=5000, poc_port=8080)
        )
    result = run_cli("--config", str(config_file), "nodes", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert [n["id"] for n in json.loads(result.stdout)] == ["n1"]
    table = run_cli("--config", str(config_file), "nodes", "list")
    assert "n1" in table.stdout


def test_bad_config_is_one_line_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("api:\n  port: 1\n  port: 2\n")
    result = run_cli("--config", str(bad), "status", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "duplicate key" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_exit_1(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "none.yaml"), "status")
    assert result.returncode == 1
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exit_2(config_file: Path) -> None:
    result = run_cli("--config", str(config_file), "no-such-command")
    assert result.returncode == 2
    assert result.stdout == ""
    result = run_cli("--config", str(config_file), "status", "--bogus")
    assert result.returncode == 2


def test_help_and_version() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "Exit codes" in result.stdout
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == __import__("dapi_config").__version__


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if hasattr(command, "commands"):
            found.extend(_commands(command, f"{prefix}{name} "))
    return found


def test_every_command_has_help_with_example() -> None:
    root = typer.main.get_command(app)
    commands = _commands(root)
    assert {"status", "nodes", "nodes list"} <= {name for name, _ in commands}
    for name, command in commands:
        assert command.help and command.help.strip(), f"{name} has no help"
        if not hasattr(command, "commands"):
            assert "Example:" in command.help, f"{name} help has no example"


def test_dash_h_is_help_on_every_level(config_file: Path) -> None:
    for args in (("-h",), ("tokens", "-h"), ("tokens", "create", "-h"), ("nodes", "list", "-h")):
        result = run_cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith("Usage:") and "-h, --help" in result.stdout, args


def test_help_groups_the_commands_with_whole_summaries() -> None:
    """Seen on main: 18 commands in one flat list, their summaries cut mid-sentence."""
    result = run_cli("-h")
    assert result.returncode == 0
    sections = ["Start:", "The state:", "Backups and recovery:", "Security:"]
    positions = [result.stdout.index(section) for section in sections]
    assert positions == sorted(positions)
    assert "..." not in result.stdout.split("Start:", 1)[1]
    assert "tokens" in result.stdout and "Other commands:" not in result.stdout


def test_completion_for_a_named_shell() -> None:
    """Seen on main: `--show-completion zsh` printed the bash script (it guesses the shell)."""
    scripts = {shell: run_cli("completion", shell) for shell in ("bash", "zsh", "fish")}
    assert all(r.returncode == 0 for r in scripts.values())
    assert scripts["zsh"].stdout.startswith("#compdef dapi-config")
    assert "complete_zsh" in scripts["zsh"].stdout
    assert "complete --command dapi-config" in scripts["fish"].stdout
    assert "complete_bash" in scripts["bash"].stdout
    unknown = run_cli("completion", "tcsh")
    assert unknown.returncode == 2 and "'tcsh' is not one of" in unknown.stderr
