"""``dapi-config state get|set|schedule|rotate-seeds`` as real subprocesses: every kind of the
catalogue set from a value, a file or stdin and read back as the HTTP GET answers it; bad input
one line on stderr, exit 1, nothing changed; the writes audited as ``cli``."""

from __future__ import annotations

import json
from pathlib import Path

from dapi_config import ConfigManager
from tests.conftest import run_cli
from tests.test_catalogue import NEW


def _cli(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    done = run_cli("--config", str(config), "state", *args, input=stdin)
    return done.returncode, done.stdout, done.stderr


def test_every_kind_is_set_and_read_back(config_file: Path, tmp_path: Path) -> None:
    for index, (name, value) in enumerate(NEW.items()):
        text = json.dumps(value)
        if index % 3 == 0:
            code, out, err = _cli(config_file, "set", name, text, "--json")
        elif index % 3 == 1:
            file = tmp_path / f"{name}.json"
            file.write_text(text)
            code, out, err = _cli(config_file, "set", name, str(file), "--json")
        else:
            code, out, err = _cli(config_file, "set", name, "-", "--json", stdin=text)
        assert code == 0, err
        code, shown, err = _cli(config_file, "get", name, "--json")
        assert code == 0 and json.loads(shown) == json.loads(out), err
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == NEW["height"]["height"]
        assert cm.get_upgrade_plan().name == "v2"
        assert {e.actor for e in cm.get_audit(0, 100)} == {"cli"}
        summary = cm.state_summary()
    code, whole, _ = _cli(config_file, "get", "--json")
    assert code == 0 and json.loads(whole) == summary  # what GET /admin/v1/state answers
    code, human, _ = _cli(config_file, "get", "upgrade-plan")
    assert code == 0 and "name: v2" in human and "height: 5000" in human


def test_schedule_rotation_and_a_bare_height(config_file: Path) -> None:
    assert _cli(config_file, "schedule", "add", "900", "v2")[0] == 0
    code, out, _ = _cli(config_file, "schedule", "add", "900", "v2")
    assert code == 0 and "scheduled already" in out
    assert _cli(config_file, "set", "upgrade-plan", "{name: v2, height: 900}")[0] == 0
    assert _cli(config_file, "set", "seeds.upcoming", "{seed: 5}")[0] == 0
    code, out, _ = _cli(config_file, "rotate-seeds")
    assert code == 0 and "seed: 5" in out
    code, out, _ = _cli(config_file, "set", "height", "900", "--json")
    assert code == 0 and json.loads(out) == {"height": 900, "current_node_version": "v2"}
    code, _, err = _cli(config_file, "schedule", "remove", "900", "v2")
    assert code == 1 and "nothing changed" in err  # applied by the height: gone already
    code, out, _ = _cli(config_file, "clear", "upgrade-plan")
    assert code == 0 and 'name: ""' in out
    code, _, err = _cli(config_file, "clear", "height")
    assert code == 1 and "cannot be cleared" in err
    code, public, _ = _cli(config_file, "worker-key")
    with ConfigManager.open(config_file) as cm:
        assert cm.get_current_seed().seed == 5 and cm.get_node_versions() == []
        assert cm.get_upgrade_plan().name == ""
        assert code == 0 and cm.get_ml_node_key_config().worker_public == public.strip()


def test_bad_input_is_one_line_and_changes_nothing(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        revision = cm.latest_revision()
    for args in (
        ("set", "height", "abc"),
        ("set", "height", "-5"),
        ("set", "nope", "1"),
        ("set", "seeds.current", "{seed: [1"),
        ("set", "upgrade-plan", "{height: soon}"),
        ("get", "nope"),
        ("schedule", "add", "-1", "v2"),
    ):
        code, _, err = _cli(config_file, *args)
        assert code in (1, 2), args
        assert "Traceback" not in err and err.strip(), args
    with ConfigManager.open(config_file) as cm:
        assert cm.latest_revision() == revision
