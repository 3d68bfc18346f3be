"""``dapi-config init``: a new directory gets a commented config (0600) and an empty state; an
existing config is never overwritten; the messages of a bare directory name it."""

from __future__ import annotations

import stat
from pathlib import Path

from dapi_config import ConfigManager, StaticConfig
from tests.conftest import run_cli


def test_init_writes_a_commented_config_and_an_empty_state(tmp_path: Path) -> None:
    bare = run_cli("status", cwd=tmp_path)
    assert bare.returncode == 1 and "`dapi-config init` writes a new one" in bare.stderr

    done = run_cli("init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config, state = tmp_path / "config.yaml", tmp_path / "state.db"
    assert done.stdout.splitlines() == ["config: config.yaml", "state: state.db (revision 0)"]
    assert "next: edit config.yaml" in done.stderr
    for path in (config, state):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    text = config.read_text()
    assert text.startswith("# dapi-config static configuration") and "# tls_cert:" in text
    with ConfigManager.open(config) as cm:
        assert cm.static_config.model_dump() == StaticConfig().model_dump()
        assert cm.latest_revision() == 0
    assert run_cli("status", "--json", cwd=tmp_path).returncode == 0


def test_init_never_overwrites(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("api:\n  port: 1234\n")
    again = run_cli("--config", str(config), "init")
    assert again.returncode == 1
    assert "exists; init never overwrites a config" in again.stderr
    assert config.read_text() == "api:\n  port: 1234\n"
    assert not (tmp_path / "state.db").exists()
    missing = run_cli("--config", str(tmp_path / "no" / "such" / "config.yaml"), "init")
    assert missing.returncode == 1 and "cannot write" in missing.stderr
    assert "Traceback" not in missing.stderr
