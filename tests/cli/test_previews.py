"""Destructive commands show what they would change (``--dry-run``) and, on a terminal, ask
first (``--yes`` skips it; a script, whose stdin is not a terminal, is never asked): restore,
recover, ``nodes import --replace``, ``keys rotate`` and ``keys delete``. Through the real entry
point; the terminal is a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from dapi_config import ConfigManager, InferenceNodeConfig
from tests.conftest import run_cli


def _node(node_id: str, host: str = "10.0.0.1") -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host=host, inference_port=5000, poc_port=8080)


def _on_terminal(config: Path, *args: str, answer: str) -> subprocess.CompletedProcess[str]:
    """Run the command with a pseudo-terminal as stdin, answering ``answer`` to a question."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dapi_config", "--config", str(config), *args],
            stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        os.close(secondary)
        os.write(primary, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(primary)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_restore_previews_and_asks(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(100)
        cm.add_nodes([_node("a"), _node("b")])
        backup = cm.backup()
        cm.set_height(150)
        cm.remove_node("a")
        cm.update_node(_node("b", host="10.9.9.9"))
        cm.add_node(_node("c"))
        revision = cm.latest_revision()
    preview = run_cli("--config", str(config_file), "restore", str(backup.path), "--dry-run")
    assert preview.returncode == 0, preview.stderr
    lines = preview.stdout.splitlines()
    assert lines[0].startswith(f"revisions {backup.revision + 1}-") and "undone" in lines[0]
    for expected in ("height: 150 -> 100", "node c: removed", "node a: added"):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert "node b: changed (host)" in lines
    as_json = run_cli(
        "--config", str(config_file), "restore", str(backup.path), "--dry-run", "--json"
    )
    assert json.loads(as_json.stdout)["changes"] == lines

    refused = _on_terminal(config_file, "restore", str(backup.path), answer="n")
    assert refused.returncode == 1 and "not confirmed: nothing was changed" in refused.stderr
    assert "node c: removed" in refused.stderr  # the preview, shown before the question
    with ConfigManager.open(config_file) as cm:
        assert cm.latest_revision() == revision and cm.get_height() == 150
    agreed = _on_terminal(config_file, "restore", str(backup.path), answer="y")
    assert agreed.returncode == 0, agreed.stderr
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 100 and [n.id for n in cm.get_nodes()] == ["a", "b"]
    # A script (stdin not a terminal) is never asked.
    scripted = run_cli("--config", str(config_file), "restore", str(backup.path), input="")
    assert scripted.returncode == 0, scripted.stderr


def test_nodes_import_replace_previews_and_asks(config_file: Path, tmp_path: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_nodes([_node("a"), _node("b")])
    incoming = tmp_path / "nodes.json"
    incoming.write_text(
        json.dumps([_node("b", host="10.2.2.2").model_dump(), _node("d").model_dump()])
    )
    preview = run_cli(
        "--config", str(config_file), "nodes", "import", str(incoming), "--replace", "--dry-run"
    )
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.splitlines() == [
        "node a: removed",
        "node b: changed (host)",
        "node d: added",
    ]
    refused = _on_terminal(config_file, "nodes", "import", str(incoming), "--replace", answer="")
    assert refused.returncode == 1 and "3 change(s), 1 removal(s)" in refused.stderr
    with ConfigManager.open(config_file) as cm:
        assert [n.id for n in cm.get_nodes()] == ["a", "b"]
    done = _on_terminal(
        config_file, "nodes", "import", str(incoming), "--replace", "--yes", answer=""
    )
    assert done.returncode == 0, done.stderr
    with ConfigManager.open(config_file) as cm:
        assert [n.id for n in cm.get_nodes()] == ["b", "d"]


def test_keys_rotate_and_delete_preview_and_ask(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(_node("a"))
        cm.create_security_key("a")
    rotate = run_cli("--config", str(config_file), "keys", "rotate", "a", "--dry-run")
    assert rotate.returncode == 0 and "version 1" in rotate.stdout and "version 2" in rotate.stdout
    delete = run_cli("--config", str(config_file), "keys", "delete", "a", "--dry-run", "--json")
    assert "would be revoked" in json.loads(delete.stdout)["would"]
    refused = _on_terminal(config_file, "keys", "delete", "a", answer="no")
    assert refused.returncode == 1 and "not confirmed" in refused.stderr
    with ConfigManager.open(config_file) as cm:
        assert cm.get_security_key_info("a").key_version == 1  # untouched
    rotated = _on_terminal(config_file, "keys", "rotate", "a", answer="y")
    assert rotated.returncode == 0, rotated.stderr
    with ConfigManager.open(config_file) as cm:
        assert cm.get_security_key_info("a").key_version == 2


def test_recover_dry_run_changes_nothing(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(5)
        good = cm.backup()
        state = cm.state_path
    sound = run_cli("--config", str(config_file), "recover", "--dry-run")
    assert sound.returncode == 0 and "sound; nothing to recover" in sound.stdout
    state.write_bytes(b"this is not a database" * 100)
    damaged = state.read_bytes()
    plan = run_cli("--config", str(config_file), "recover", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"would restore {good.path}" in plan.stdout
    assert state.read_bytes() == damaged  # nothing moved, nothing restored
    as_json = run_cli("--config", str(config_file), "recover", "--dry-run", "--json")
    assert json.loads(as_json.stdout)["would_restore"]["path"] == str(good.path)
