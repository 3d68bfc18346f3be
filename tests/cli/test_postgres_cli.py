"""The CLI on a PostgreSQL state: ``--state postgresql://...`` (a URL, not a path) and
``API_STATE_URL``; commands on the SQLite file itself say why they do not apply."""

from __future__ import annotations

import json
from pathlib import Path

from tests._postgres import PgServer
from tests.conftest import TEST_STATE_KEY, run_cli

NODE = '{"id": "n1", "host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080}'


def test_state_option_takes_a_postgres_url(pg_server: PgServer, config_file: Path) -> None:
    url = pg_server.fresh_database()
    env = {"API_STATE_KEY": TEST_STATE_KEY}
    base = ("--config", str(config_file), "--state", url)
    added = run_cli(*base, "nodes", "add", "-", env=env, input=NODE)
    assert added.returncode == 0, added.stderr
    status = run_cli(*base, "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["node_count"] == 1
    assert summary["state_path"] == url
    # The same state through API_STATE_URL.
    listed = run_cli("--config", str(config_file), "nodes", "list", "--json",
                     env={**env, "API_STATE_URL": url})  # fmt: skip
    assert [n["id"] for n in json.loads(listed.stdout)] == ["n1"]
    assert not (config_file.parent / "state.db").exists()


def test_backups_of_a_postgres_state(pg_server: PgServer, config_file: Path) -> None:
    """backup, backups, check and restore work on a PostgreSQL state as on a file: its backups
    are SQLite snapshot files beside the config file."""
    url = pg_server.fresh_database()
    env = {"API_STATE_KEY": TEST_STATE_KEY}
    base = ("--config", str(config_file), "--state", url)
    assert run_cli(*base, "nodes", "add", "-", env=env, input=NODE).returncode == 0
    unbacked = run_cli(*base, "check", env=env)
    assert unbacked.returncode == 1 and "no good backup" in unbacked.stdout
    taken = run_cli(*base, "backup", "--json", env=env)
    assert taken.returncode == 0, taken.stderr
    backup = json.loads(taken.stdout)
    assert backup["ok"] and Path(backup["path"]).parent == config_file.parent / "backups"
    assert run_cli(*base, "nodes", "remove", "n1", env=env).returncode == 0
    listed = run_cli(*base, "backups", "--json", env=env)
    assert [b["path"] for b in json.loads(listed.stdout)] == [backup["path"]]
    checked = run_cli(*base, "check", "--json", env=env)
    assert checked.returncode == 0, checked.stdout
    report = json.loads(checked.stdout)
    assert report["backend"] == "postgresql" and report["state_path"] == url
    restored = run_cli(*base, "restore", backup["path"], env=env)
    assert restored.returncode == 0, restored.stderr
    assert "previous state backed up to" in restored.stdout
    nodes = run_cli(*base, "nodes", "list", "--json", env=env)
    assert [n["id"] for n in json.loads(nodes.stdout)] == ["n1"]


def test_file_commands_explain_themselves(pg_server: PgServer, config_file: Path) -> None:
    url = pg_server.fresh_database()
    for command in (("recover",), ("encrypt",)):
        result = run_cli("--config", str(config_file), "--state", url, *command)
        assert result.returncode == 1, command
        assert "PostgreSQL" in result.stderr and "Traceback" not in result.stderr


def test_bad_state_url_is_one_clear_line(config_file: Path) -> None:
    result = run_cli(
        "--config", str(config_file), "status", env={"API_STATE_URL": "mysql://u:pw@h/db"}
    )
    assert result.returncode == 1
    assert "API_STATE_URL: expected a postgresql://" in result.stderr
    assert "pw" not in result.stderr.replace("postgresql", "")
