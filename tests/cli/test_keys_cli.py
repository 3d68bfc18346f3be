"""``dapi-config keys ...`` as a real subprocess: stdout carries only the result."""

from __future__ import annotations

import json
from pathlib import Path

from dapi_config import ConfigManager, InferenceNodeConfig
from tests.conftest import run_cli


def _setup(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(InferenceNodeConfig(id="n1", host="h", inference_port=1, poc_port=2))


def test_create_rotate_list_delete(config_file: Path) -> None:
    _setup(config_file)
    cfg = ("--config", str(config_file))
    created = run_cli(*cfg, "keys", "create", "n1")
    assert created.returncode == 0, created.stderr
    key1 = created.stdout.strip()
    assert len(key1) == 43 and "\n" not in key1  # the key alone, for KEY=$(...)
    assert "version 1" in created.stderr and key1 not in created.stderr

    rotated = run_cli(*cfg, "keys", "rotate", "n1", "--json")
    assert rotated.returncode == 0, rotated.stderr
    issued = json.loads(rotated.stdout)
    assert issued["key_version"] == 2 and issued["security_key"] != key1

    listed = run_cli(*cfg, "keys", "list", "--json")
    infos = json.loads(listed.stdout)
    assert [(i["node_id"], i["key_version"]) for i in infos] == [("n1", 2)]
    assert issued["security_key"] not in listed.stdout
    with ConfigManager.open(config_file) as cm:
        assert cm.verify_security_key("n1", issued["security_key"])
        assert not cm.verify_security_key("n1", key1)

    check = run_cli(*cfg, "keys", "check")
    assert check.returncode == 0 and "key file" in check.stdout

    deleted = run_cli(*cfg, "keys", "delete", "n1")
    assert deleted.returncode == 0 and "version 2" in deleted.stdout


def test_errors_exit_1_with_one_line(config_file: Path) -> None:
    _setup(config_file)
    cfg = ("--config", str(config_file))
    for args, message in (
        (("keys", "rotate", "n1"), "has no security key"),
        (("keys", "create", "ghost"), "not found"),
        (("keys", "delete", "n1"), "has no security key"),
    ):
        result = run_cli(*cfg, *args)
        assert result.returncode == 1, args
        assert result.stdout == ""
        assert result.stderr.startswith("error: ") and message in result.stderr
    assert run_cli(*cfg, "keys", "create", "n1").returncode == 0
    again = run_cli(*cfg, "keys", "create", "n1")
    assert again.returncode == 1 and "rotate it instead" in again.stderr
    short = run_cli(*cfg, "keys", "list", env={"API_STATE_KEY": "short"})
    assert short.returncode == 1 and "too short" in short.stderr and "short\n" not in short.stderr
    wrong = run_cli(*cfg, "keys", "check", env={"API_STATE_KEY": "x" * 20})
    assert wrong.returncode == 1 and "does not open" in wrong.stderr
