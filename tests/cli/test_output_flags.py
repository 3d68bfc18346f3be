"""Output flags as kubectl users expect: ``-o json|yaml|table`` (and ``--json``) on the commands
that print data, anywhere on the line; ``--out`` alone names a file. Seen on main:
``dapi-config backup -o json`` wrote a backup named ``json``."""

from __future__ import annotations

import json
from pathlib import Path

from ruamel.yaml import YAML

from dapi_config import ConfigManager, InferenceNodeConfig
from tests.conftest import run_cli

#: Commands that print data, each with what it needs after the config.
DATA_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("status",),
    ("nodes", "list"),
    ("nodes", "get", "n1"),
    ("audit",),
    ("backups",),
    ("keys", "list"),
    ("keys", "check"),
    ("tokens", "list"),
    ("state", "get", "height"),
    ("export", "--out", "full.yaml", "--force"),
)


def _prepared(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(
            InferenceNodeConfig(id="n1", host="10.0.0.1", inference_port=5000, poc_port=8080)
        )
        cm.create_worker_key()
        cm.backup()


def test_every_data_command_prints_json_and_yaml_with_o(config_file: Path) -> None:
    _prepared(config_file)
    for command in DATA_COMMANDS:
        base = ("--config", str(config_file), *command)
        as_json = run_cli(*base, "-o", "json", cwd=config_file.parent)
        assert as_json.returncode == 0, (command, as_json.stderr)
        data = json.loads(as_json.stdout)  # what --json prints (tested command by command)
        as_yaml = run_cli("-o", "yaml", *base, cwd=config_file.parent)
        assert as_yaml.returncode == 0, (command, as_yaml.stderr)
        if command[0] not in ("audit", "backups", "export"):  # times move between runs
            assert YAML(typ="safe").load(as_yaml.stdout) == data, command
        table = run_cli(*base, "--output", "table", cwd=config_file.parent)
        assert table.returncode == 0, (command, table.stderr)


def test_o_is_a_format_and_out_a_file(config_file: Path) -> None:
    _prepared(config_file)
    here = config_file.parent
    backup = run_cli("--config", str(config_file), "backup", "-o", "json", cwd=here)
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["ok"] is True
    assert not (here / "json").exists()
    wrong = run_cli("--config", str(config_file), "backup", "-o", str(here / "x.db"), cwd=here)
    assert wrong.returncode == 2 and "Invalid value for '--output' / '-o'" in wrong.stderr
    assert not (here / "x.db").exists()
    out = run_cli("--config", str(config_file), "backup", "--out", str(here / "x.db"), cwd=here)
    assert out.returncode == 0 and (here / "x.db").is_file()
