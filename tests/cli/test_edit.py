"""``dapi-config edit`` through a real editor substitute: ``EDITOR`` is a script that edits the
file as each test says (a sequence of steps, one per time it is opened), so the whole loop runs
as an operator meets it: the edit checked, a bad edit reopened with its errors on top, the diff
shown, the change applied in one transaction, or refused when the state changed meanwhile."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dapi_config import ConfigManager
from tests.conftest import run_cli

# Each time it is opened, the editor applies the next step: {"replace": [[old, new], ...]}
# on the text, {"write_state": [args...]} runs `dapi-config ARGS` meanwhile, {"keep": true}
# saves the file unchanged. It records every text it was given.
EDITOR = """\
import json, subprocess, sys
from pathlib import Path
plan = Path(sys.argv[0]).with_suffix(".json")
steps = json.loads(plan.read_text())
seen = Path(sys.argv[0]).with_suffix(".seen")
done = len(seen.read_text().split("\\0")) - 1 if seen.exists() else 0
text = Path(sys.argv[1]).read_text()
with seen.open("a") as log:
    log.write(text + "\\0")
step = steps[done]
for old, new in step.get("replace", []):
    assert old in text, (old, text)
    text = text.replace(old, new)
if "write_state" in step:
    subprocess.run([sys.executable, "-m", "dapi_config", *step["write_state"]], check=True)
Path(sys.argv[1]).write_text(text)
"""


def _editor(tmp_path: Path, steps: list[dict[str, object]]) -> tuple[dict[str, str], Path]:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    script.with_suffix(".json").write_text(json.dumps(steps))
    return {"EDITOR": f"{sys.executable} {script}"}, script.with_suffix(".seen")


def _edit(config: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = run_cli("--config", str(config), "edit", *args, env=env)
    return done.returncode, done.stdout, done.stderr


def test_an_edit_is_shown_and_applied(config_file: Path, tmp_path: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_upgrade_plan({"name": "v2", "height": 900, "binaries": {"a": "http://x"}})
    env, _ = _editor(
        tmp_path,
        [
            {
                "replace": [
                    ["height: 0\n", "height: 1200\n"],
                    ["    binaries:\n        a: http://x\n", ""],
                ]
            }
        ],
    )
    code, out, err = _edit(config_file, env)
    assert code == 0, err
    assert "-height: 0" in out and "+height: 1200" in out and "Applied" in out
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 1200
        plan = cm.get_upgrade_plan()
        assert (plan.name, plan.binaries) == ("v2", {})  # a removed field is reset
        assert cm.get_audit(0, 10, newest=True)[-1].actor == "cli"


def test_a_bad_edit_reopens_with_its_errors(config_file: Path, tmp_path: Path) -> None:
    env, seen = _editor(
        tmp_path,
        [
            {"replace": [["height: 0\n", "height: soon\n"]]},
            {"replace": [["height: soon\n", "height: 7\n"]]},
        ],
    )
    code, out, err = _edit(config_file, env)
    assert code == 0 and "+height: 7" in out, err
    second = seen.read_text().split("\0")[1]
    assert second.startswith("# ERROR: height") and "height: soon" in second
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 7


def test_saved_unchanged_or_given_up_changes_nothing(config_file: Path, tmp_path: Path) -> None:
    env, _ = _editor(tmp_path, [{"keep": True}])
    code, out, _ = _edit(config_file, env)
    assert code == 0 and "cancelled" in out
    env, _ = _editor(
        tmp_path,
        [{"replace": [["height: 0\n", "nonsense: 1\nheight: 0\n"]]}, {"keep": True}],
    )
    code, out, _ = _edit(config_file, env)
    assert code == 0 and "cancelled" in out
    with ConfigManager.open(config_file) as cm:
        assert cm.latest_revision() == 0


def test_a_state_changed_meanwhile_is_not_overwritten(config_file: Path, tmp_path: Path) -> None:
    env, _ = _editor(
        tmp_path,
        [
            {
                "replace": [["height: 0\n", "height: 5\n"]],
                "write_state": ["--config", str(config_file), "state", "set", "height", "9"],
            }
        ],
    )
    code, _, err = _edit(config_file, env)
    assert code == 1 and "changed since revision" in err and "edit again" in err
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 9  # the other writer's value stands


def test_dry_run_and_nodes(config_file: Path, tmp_path: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(
            {"id": "cloud", "base_url": "https://svc.example", "auth_token": "tok-123456",
             "models": {"m": {"args": []}}, "max_concurrent": 8}
        )  # fmt: skip
    env, seen = _editor(tmp_path, [{"replace": [["max_concurrent: 8", "max_concurrent: 16"]]}])
    code, out, _ = _edit(config_file, env, "--nodes", "--dry-run")
    assert code == 0 and "+      max_concurrent: 16" in out and "nothing was written" in out
    assert "tok-123456" not in seen.read_text() and "<redacted>" in seen.read_text()
    second = tmp_path / "second"
    second.mkdir()
    env, _ = _editor(second, [{"replace": [["max_concurrent: 8", "max_concurrent: 16"]]}])
    code, out, err = _edit(config_file, env, "--nodes")
    assert code == 0, err
    with ConfigManager.open(config_file) as cm:
        node = cm.get_node("cloud")
        assert node.max_concurrent == 16
        assert node.auth_token is not None and node.auth_token.get_secret_value() == "tok-123456"
