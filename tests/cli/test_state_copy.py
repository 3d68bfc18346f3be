"""``dapi-config state copy``: a SQLite state (its secrets under the key file) to PostgreSQL
and back again, verified and complete; a target that holds state is refused without --force."""

from __future__ import annotations

import json
from pathlib import Path

from dapi_config import ConfigManager, InferenceNodeConfig
from tests._postgres import PgServer
from tests.conftest import TEST_STATE_KEY, run_cli

TOKEN = "copy-me-token-55"


def populate(config: Path) -> tuple[str, str]:
    """A state with every kind of row; returns (worker public key, node n1's security key)."""
    with ConfigManager.open(config) as cm:
        cm.add_node_version(500, "v9")
        cm.set_height(120)
        cm.add_node(InferenceNodeConfig(id="n1", host="h", inference_port=1, poc_port=2))
        cm.add_node(
            InferenceNodeConfig(id="cloud", base_url="https://svc.example", auth_token=TOKEN)
        )
        public = cm.create_worker_key()
        issued = cm.create_security_key("n1")
        return public, issued.security_key


def copy(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = run_cli("state", "copy", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_sqlite_to_postgres_and_back(
    pg_server: PgServer, config_file: Path, tmp_path: Path
) -> None:
    public, security_key = populate(config_file)
    state = config_file.parent / "state.db"
    with ConfigManager.open(config_file) as cm:
        audit = [(e.revision, e.action) for e in cm.get_audit(limit=1000)]
    url = pg_server.fresh_database(empty=True)
    env = {"API_STATE_KEY": TEST_STATE_KEY}
    there = copy(str(state), url, env=env)
    assert there["resealed"] is True  # key file -> API_STATE_KEY
    assert there["revision"] == audit[-1][0]

    pg_env = {"API_STATE_URL": url, **env}
    with ConfigManager.open(config_file, env=pg_env) as cm:
        assert cm.get_height() == 120
        assert [v.version for v in cm.get_node_versions()] == ["v9"]
        token = cm.get_node("cloud").auth_token
        assert token is not None and token.get_secret_value() == TOKEN
        assert cm.get_ml_node_key_config().worker_public == public
        assert cm.verify_security_key("n1", security_key)
        assert [(e.revision, e.action) for e in cm.get_audit(limit=1000)] == audit
        cm.set_height(121)  # ids continue after the copied ones
        assert cm.latest_revision() == audit[-1][0] + 1

    back = tmp_path / "back" / "state.db"
    back.parent.mkdir()
    again = copy(url, str(back), env=env)
    assert again["resealed"] is False  # API_STATE_KEY on both sides: copied as sealed
    other = back.parent / "config.yaml"
    other.write_text(config_file.read_text())
    other.chmod(0o600)
    with ConfigManager.open(other, env=env) as cm:
        assert cm.get_height() == 121
        assert cm.verify_security_key("n1", security_key)
        token = cm.get_node("cloud").auth_token
        assert token is not None and token.get_secret_value() == TOKEN


def test_occupied_target_needs_force(config_file: Path, tmp_path: Path) -> None:
    populate(config_file)
    state = config_file.parent / "state.db"
    target_dir = tmp_path / "other"
    target_dir.mkdir()
    target_config = target_dir / "config.yaml"
    target_config.write_text(config_file.read_text())
    target_config.chmod(0o600)
    with ConfigManager.open(target_config) as cm:
        cm.set_height(7)
    target = target_dir / "state.db"
    refused = run_cli("state", "copy", str(state), str(target))
    assert refused.returncode == 1
    assert "already holds state" in refused.stderr and "--force" in refused.stderr
    with ConfigManager.open(target_config) as cm:
        assert cm.get_height() == 7  # untouched
    # --force: replaced, after a backup of what was there.
    result = run_cli("state", "copy", str(state), str(target), "--force")
    assert result.returncode == 0, result.stderr
    assert any("pre-state-copy" in p.name for p in (target_dir / "backups").iterdir())
    # The source's key file is not the target's: its secrets were re-sealed for the target.
    with ConfigManager.open(target_config) as cm:
        assert cm.get_height() == 120
        token = cm.get_node("cloud").auth_token
        assert token is not None and token.get_secret_value() == TOKEN


def test_bad_copies_change_nothing(config_file: Path, tmp_path: Path) -> None:
    missing = run_cli("state", "copy", str(tmp_path / "nope.db"), str(tmp_path / "new.db"))
    assert missing.returncode == 1 and "no state file here" in missing.stderr
    assert not (tmp_path / "new.db").exists()
    populate(config_file)
    state = str(config_file.parent / "state.db")
    same = run_cli("state", "copy", state, state)
    assert same.returncode == 1 and "the same state" in same.stderr


def test_a_forced_copy_never_takes_a_states_revisions_back(
    config_file: Path, tmp_path: Path
) -> None:
    """A copy onto a state whose trail had gone further than the source's would have handed
    its revisions out again: pollers at the old latest revision would miss every change."""
    state = config_file.parent / "state.db"
    with ConfigManager.open(config_file) as cm:
        cm.set_height(1)
        source_latest = cm.latest_revision()
    target_config = tmp_path / "other" / "config.yaml"
    target_config.parent.mkdir()
    target_config.write_text(config_file.read_text())
    target_config.chmod(0o600)
    with ConfigManager.open(target_config) as cm:
        for height in range(1, 11):
            cm.set_height(height)
        before = cm.latest_revision()
    assert before > source_latest
    copied = run_cli("state", "copy", str(state), str(tmp_path / "other" / "state.db"), "--force")
    assert copied.returncode == 0, copied.stderr
    with ConfigManager.open(target_config) as cm:
        assert cm.get_height() == 1  # the source's state
        (jump,) = cm.get_audit(since=before)
        assert (jump.revision, jump.action) == (before + 1, "state_copy")
        cm.set_height(2)
        assert cm.latest_revision() == before + 2  # and on from there
