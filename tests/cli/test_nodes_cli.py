"""``dapi-config nodes add/remove/enable/disable`` as real subprocesses, also beside a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from dapi_config import ConfigManager
from tests.api.conftest import start_serve_process
from tests.conftest import _OUR_VARS, run_cli

NODE = {"id": "n1", "host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080}


def cli_stdin(config: Path, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_VARS)}
    return subprocess.run(
        [sys.executable, "-m", "dapi_config", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def ids(config: Path) -> list[str]:
    with ConfigManager.open(config) as cm:
        return [n.id for n in cm.get_nodes()]


def test_add_one_from_file(config_file: Path, tmp_path: Path) -> None:
    source = tmp_path / "node.json"
    source.write_text(json.dumps(NODE))
    result = run_cli("--config", str(config_file), "nodes", "add", str(source), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == "n1"
    assert json.loads(result.stdout)["is_enabled"] is True
    assert ids(config_file) == ["n1"]
    with ConfigManager.open(config_file) as cm:
        assert cm.backend.audit_entries()[0].actor == "cli"


def test_add_list_from_stdin_yaml_and_all_or_nothing(config_file: Path) -> None:
    yaml_list = (
        "- {id: a, host: h, inference_port: 1, poc_port: 2}\n"
        "- {id: b, host: h, inference_port: 1, poc_port: 2}\n"
    )
    result = cli_stdin(config_file, "nodes", "add", "-", stdin=yaml_list)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "added 2 node(s): a, b\n"  # seen on main: the full JSON, always

    bad = [dict(NODE, id="c"), dict(NODE, id="d", poc_port=0)]
    result = cli_stdin(config_file, "nodes", "add", "-", stdin=json.dumps(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: stdin: invalid input: nodes[1].poc_port")
    assert ids(config_file) == ["a", "b"]


def test_add_errors_are_one_line(config_file: Path, tmp_path: Path) -> None:
    cases = {
        "dup": json.dumps([NODE, NODE]),
        "notyaml": "{id: [",
        "empty": "",
        "scalar": "42",
    }
    for name, text in cases.items():
        result = cli_stdin(config_file, "nodes", "add", "-", stdin=text)
        assert result.returncode == 1, name
        assert result.stdout == "", name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
    missing = run_cli("--config", str(config_file), "nodes", "add", str(tmp_path / "nope.json"))
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr
    assert ids(config_file) == []


def test_remove_enable_disable(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(NODE)  # type: ignore[arg-type]
    result = run_cli("--config", str(config_file), "nodes", "disable", "n1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "node n1 disabled\n"
    result = run_cli("--config", str(config_file), "nodes", "enable", "n1", "--json")
    assert json.loads(result.stdout)["is_enabled"] is True
    result = run_cli("--config", str(config_file), "nodes", "remove", "n1", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["id"] == "n1"
    assert ids(config_file) == []
    for command in ("remove", "enable", "disable"):
        result = run_cli("--config", str(config_file), "nodes", command, "ghost")
        assert result.returncode == 1
        assert result.stderr == "error: node 'ghost' not found\n"
    # An argument that is not valid UTF-8 (surrogate-escaped by Python) is simply unknown.
    weird = subprocess.run(
        [
            sys.executable,
            "-m",
            "dapi_config",
            "--config",
            str(config_file),
            "nodes",
            "remove",
            os.fsdecode(b"n\xff"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert weird.returncode == 1
    assert weird.stderr == "error: node 'n\\udcff' not found\n"


def test_cli_writes_beside_a_running_service(config_file: Path) -> None:
    proc = start_serve_process(config_file)
    try:
        httpx.post(f"{proc.url}/admin/v1/nodes", json=NODE).raise_for_status()
        node2 = json.dumps(dict(NODE, id="n2"))
        result = cli_stdin(config_file, "nodes", "add", "-", stdin=node2)
        assert result.returncode == 0, result.stderr
        assert run_cli("--config", str(config_file), "nodes", "disable", "n1").returncode == 0
        listed = httpx.get(f"{proc.url}/admin/v1/nodes").json()
        assert [(n["node"]["id"], n["node"]["is_enabled"]) for n in listed] == [
            ("n1", False),
            ("n2", True),
        ]
        assert proc.terminate() == 0
    finally:
        proc.stop()


# --- JSON is read by a JSON parser, and reaches the API's validation (hardening) ------------


def _add(config_file: Path, text: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--config", str(config_file), "nodes", "add", "-", input=text)


def test_json_input_is_read_as_json(config_file: Path) -> None:
    """Seen on main: JSON went through the YAML parser: an escaped surrogate pair was a
    traceback, a raw U+007F was "not valid YAML", a U+0085 was stored as a space."""
    base = '{"id": "n1", "host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080'
    ok = run_cli(
        "--config", str(config_file), "nodes", "add", "-", "--json",
        input=base + ', "version": "v\\ud83d\\ude00"}',
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["version"] == "v\U0001f600"
    for bad, words in (
        (base + ', "version": "v\\ud800"}', "version"),  # a lone surrogate
        (base + ', "version": "v\x7f"}', "control characters"),
        (base + ', "version": "v\x85x"}', "control characters"),
        (base + ', "inference_port": "5000"}', "inference_port"),  # strict, as the API
        (base + ', "max_concurrent": true}', "max_concurrent"),
        (base + ', "is_enabeld": false}', "is_enabeld"),
        (base + ",}", "not valid JSON"),
        ('[{"id": "a"}, 5]', "nodes[1]"),
    ):
        result = _add(config_file, bad)
        assert result.returncode == 1, (bad, result.stdout)
        assert words in result.stderr, (bad, result.stderr)
        assert "Traceback" not in result.stderr and "YAML" not in result.stderr
    listed = run_cli("--config", str(config_file), "nodes", "list", "--json")
    assert [n["id"] for n in json.loads(listed.stdout)] == ["n1"]


def test_yaml_input_reaches_the_same_validation(config_file: Path) -> None:
    good = "id: y1\nhost: 10.0.0.6\ninference_port: 5000\npoc_port: 8080\n"
    assert _add(config_file, good).returncode == 0
    result = _add(config_file, good.replace("y1", "y2").replace("5000", '"5000"'))
    assert result.returncode == 1 and "inference_port" in result.stderr


def test_get_and_update_in_place_keep_the_security_key(config_file: Path) -> None:
    """Seen on main: no ``nodes get``, no ``nodes update``; remove + add dropped the key."""
    base = ("--config", str(config_file))
    assert run_cli(*base, "nodes", "add", "-", input=json.dumps(NODE)).returncode == 0
    issued = run_cli(*base, "keys", "create", "n1", "--json")
    key = json.loads(issued.stdout)["security_key"]
    got = run_cli(*base, "nodes", "get", "n1")
    assert got.returncode == 0, got.stderr
    node = json.loads(got.stdout)
    node["max_concurrent"] = 9
    yaml_text = "".join(f"{k}: {json.dumps(v)}\n" for k, v in node.items())
    updated = run_cli(*base, "nodes", "update", "-", input=yaml_text)
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout == "updated 1 node(s): n1\n"
    with ConfigManager.open(config_file) as cm:
        assert cm.get_node("n1").max_concurrent == 9
        assert cm.verify_security_key("n1", key)
    ghost = run_cli(*base, "nodes", "update", "-", input=json.dumps(dict(NODE, id="ghost")))
    assert ghost.returncode == 1 and "ghost" in ghost.stderr
    assert run_cli(*base, "nodes", "get", "ghost").returncode == 1


def test_list_shows_addresses_whole(config_file: Path) -> None:
    """Seen on main: an empty segment showed as "/:5000" and model names were cut at 80
    columns."""
    long_models = {f"org/some-rather-long-model-name-{i}": {} for i in range(3)}
    with ConfigManager.open(config_file) as cm:
        cm.add_node(dict(NODE, models=long_models))  # type: ignore[arg-type]
        cm.add_node({"id": "b", "base_url": "http://10.0.0.9:8000"})  # type: ignore[arg-type]
    listed = run_cli("--config", str(config_file), "nodes", "list")
    assert listed.returncode == 0
    assert "/:" not in listed.stdout and "…" not in listed.stdout
    assert "10.0.0.5:5000" in listed.stdout and "http://10.0.0.9:8000" in listed.stdout
    for name in long_models:
        assert name in listed.stdout


def test_import_takes_yaml_and_one_node_like_add(config_file: Path, tmp_path: Path) -> None:
    """Seen on main: ``nodes import`` took only a JSON list, while ``nodes add`` took one node
    or a list, JSON or YAML."""
    one = tmp_path / "one.yaml"
    one.write_text("id: y1\nhost: 10.0.0.6\ninference_port: 5000\npoc_port: 8080\n")
    listed = tmp_path / "more.yml"
    listed.write_text("- {id: y2, host: h, inference_port: 1, poc_port: 2}\n")
    single_json = tmp_path / "one.json"
    single_json.write_text(json.dumps(dict(NODE, id="j1")))
    for source in (one, listed, single_json):
        result = run_cli("--config", str(config_file), "nodes", "import", str(source))
        assert result.returncode == 0, result.stderr
    assert ids(config_file) == ["y1", "y2", "j1"]


def test_import_reads_stdin_for_a_dash(config_file: Path) -> None:
    """Seen on main: ``-`` was stdin for ``nodes add`` but "file not found" for ``nodes
    import``."""
    base = ("--config", str(config_file), "nodes", "import", "-")
    added = run_cli(*base, input="- {id: s1, host: h, inference_port: 1, poc_port: 2}\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "imported 1 node(s) from stdin\n"
    preview = run_cli(*base, "--replace", "--dry-run", input=json.dumps([dict(NODE, id="s2")]))
    assert preview.returncode == 0, preview.stderr
    assert "s1: removed" in preview.stdout and "s2: added" in preview.stdout
    assert ids(config_file) == ["s1"]  # a preview writes nothing
    replaced = run_cli(*base, "--replace", input=json.dumps([dict(NODE, id="s2")]))
    assert replaced.returncode == 0, replaced.stderr
    assert ids(config_file) == ["s2"]
    # Bad input on stdin: one line naming stdin, nothing changed.
    bad = run_cli(*base, input="[{")
    assert bad.returncode == 1 and bad.stderr.startswith("error: stdin: not valid JSON")
    assert "Traceback" not in bad.stderr and ids(config_file) == ["s2"]


def test_several_ids_at_once_all_or_nothing(config_file: Path) -> None:
    """Seen on main: `nodes remove a b` took one id and said "removed 1 node(s)"."""
    with ConfigManager.open(config_file) as cm:
        cm.add_nodes([dict(NODE, id=i) for i in ("a", "b", "c")])  # type: ignore[misc]
    done = run_cli("--config", str(config_file), "nodes", "disable", "a", "b")
    assert done.returncode == 0 and done.stdout == "disabled 2 node(s): a, b\n"
    refused = run_cli("--config", str(config_file), "nodes", "remove", "a", "ghost")
    assert refused.returncode == 1 and refused.stderr == "error: node 'ghost' not found\n"
    assert ids(config_file) == ["a", "b", "c"]  # nothing removed
    removed = run_cli("--config", str(config_file), "nodes", "remove", "a", "c", "--json")
    assert [n["id"] for n in json.loads(removed.stdout)] == ["a", "c"]
    assert ids(config_file) == ["b"]
    got = run_cli("--config", str(config_file), "nodes", "get", "b", "--json")
    assert got.returncode == 0 and json.loads(got.stdout)["is_enabled"] is False


def test_list_pages_and_filters(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_nodes(
            [dict(NODE, id=f"gpu-{i}", host=f"10.0.1.{i}") for i in range(5)]  # type: ignore[misc]
            + [dict(NODE, id="cpu-0", host="10.0.2.1")]  # type: ignore[list-item]
        )

    def listed(*args: str) -> list[str]:
        result = run_cli("--config", str(config_file), "nodes", "list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [n["id"] for n in json.loads(result.stdout)]

    assert listed("--limit", "2") == ["gpu-0", "gpu-1"]
    assert listed("--limit", "2", "--after", "gpu-1") == ["gpu-2", "gpu-3"]
    assert listed("--filter", "10.0.2.") == ["cpu-0"]
    assert listed("--filter", "GPU", "--after", "gpu-2", "--limit", "1") == ["gpu-3"]
    assert listed("--filter", "nothing-like-this") == []
    bad = run_cli("--config", str(config_file), "nodes", "list", "--after", "ghost")
    assert bad.returncode == 1 and "ghost" in bad.stderr and "Traceback" not in bad.stderr


def test_a_long_registry_is_listed_as_plain_columns(config_file: Path) -> None:
    """Seen on main: 20,000 nodes took 29 s as a table (rich measures and wraps every cell).
    Past a screenful the table is plain columns: every node, nothing cut."""
    with ConfigManager.open(config_file) as cm:
        cm.add_nodes(
            [dict(NODE, id=f"n{i:04d}", host=f"10.0.{i // 250}.{i % 250}") for i in range(600)]  # type: ignore[misc]
        )
    listed = run_cli("--config", str(config_file), "nodes", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "600 inference node(s)"
    assert lines[1].split() == ["id", "address", "models", "max", "version", "enabled"]
    assert [line.split()[0] for line in lines[2:]] == [f"n{i:04d}" for i in range(600)]
    assert "10.0.2.99:5000" in listed.stdout and "…" not in listed.stdout
