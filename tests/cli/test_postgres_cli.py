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


def test_file_commands_explain_themselves(pg_server: PgServer, config_file: Path) -> None:
    url = pg_server.fresh_database()
    result = run_cli("--config", str(config_file), "--state", url, "backup")
    assert result.returncode == 1
    assert "PostgreSQL" in result.stderr and "not available" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_state_url_is_one_clear_line(config_file: Path) -> None:
    result = run_cli(
        "--config", str(config_file), "status", env={"API_STATE_URL": "mysql://u:pw@h/db"}
    )
    assert result.returncode == 1
    assert "API_STATE_URL: expected a postgresql://" in result.stderr
    assert "pw" not in result.stderr.replace("postgresql", "")
