"""Upgrading from the predecessor's single-file YAML (SPEC §6): shapes, backup, import, rewrite,
idempotence, rollback round trip, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from dapi_config import ConfigError, ConfigManager, InferenceNodeConfig, SeedInfo
from dapi_config.legacy import parse_legacy_state, plan_migration
from tests.conftest import sqlite_file

DATA = Path(__file__).parents[1] / "data"
GO_WRITER = (DATA / "legacy_go_writer.yaml").read_text()
HAND_EDITED = (DATA / "legacy_hand_edited.yaml").read_text()
DYNAMIC = (
    "nodes",
    "merged_node_config",
    "current_height",
    "current_node_version",
    "upcoming_seed",
    "current_seed",
    "previous_seed",
    "upgrade_plan",
    "node_versions",
    "validation_params",
    "bandwidth_params",
    "last_processed_height",
    "last_used_version",
)


def plain_load(path: Path) -> Any:
    """A plain (non round-trip) YAML loader, as any other tool would read the file."""
    return YAML(typ="safe", pure=True).load(path.read_text())


def write(tmp_path: Path, text: str, mode: int = 0o640) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def backups(config: Path) -> list[Path]:
    return sorted(config.parent.glob(f"{config.name}.pre-migration.*"))


def audit_rows(state: Path) -> list[tuple[str, str, str]]:
    with sqlite_file(state) as conn:
        return conn.execute(
            "SELECT actor, action, target FROM audit_log ORDER BY revision"
        ).fetchall()


def imports(state: Path) -> list[tuple[str, str, str]]:
    with sqlite_file(state) as conn:
        return conn.execute(
            "SELECT kind, source_path, checksum FROM legacy_imports ORDER BY id"
        ).fetchall()


def dynamic_view(cm: ConfigManager) -> dict[str, Any]:
    """Every dynamic value, as comparable plain data."""
    return {
        "height": cm.get_height(),
        "version": cm.get_current_node_version(),
        "schedule": [v.model_dump() for v in cm.get_node_versions()],
        "seeds": [
            s.model_dump()
            for s in (cm.get_current_seed(), cm.get_previous_seed(), cm.get_upcoming_seed())
        ],
        "validation": cm.get_validation_params().model_dump(),
        "bandwidth": cm.get_bandwidth_params().model_dump(),
        "plan": cm.get_upgrade_plan().model_dump(),
        "nodes": [n.model_dump() for n in cm.get_nodes()],
        "chain": {
            k: v
            for k, v in cm.backend.chain_state().items()
            if k in ("last_processed_height", "last_used_version")
        },
    }


# --- the Go writer's file ------------------------------------------------------------------


def test_go_writer_file_imports_every_value(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    raw = config.read_bytes()
    with ConfigManager.open(config) as cm:
        assert cm.legacy_report is not None and cm.legacy_report.action == "migrated"
        assert cm.get_height() == 183467
        assert cm.get_current_node_version() == "v0.1.9"
        assert [(v.height, v.version) for v in cm.get_node_versions()] == [
            (190000, "v0.2.0"),
            (250000, "2.1"),  # quoted numeric-looking string stays a string
        ]
        assert cm.get_current_seed() == SeedInfo(
            seed=8843629105517392281,
            epoch_index=41,
            signature="3b9a0c7f5e2d41aa98c1f0e6d2b4a7c3",
            claimed=True,
        )
        assert cm.get_previous_seed().seed == -2281749263581170212
        assert cm.get_upcoming_seed().signature == "0011223344"
        assert cm.get_validation_params().timestamp_expiration == 60
        assert cm.get_bandwidth_params().kb_per_input_token == pytest.approx(0.0023)
        plan = cm.get_upgrade_plan()
        assert (plan.name, plan.height, plan.node_version) == ("v0.2.0", 190000, "v0.2.0")
        assert set(plan.binaries) == {"linux/amd64", "linux/arm64"}
        nodes = cm.get_nodes()
        assert [n.id for n in nodes] == ["node1", "node2", "3"]
        assert nodes[0].models["Qwen/Qwen2.5-7B-Instruct"].args == [
            "--quantization",
            "fp8",
            "--gpu-memory-utilization",
            "0.9",
        ]
        assert nodes[0].hardware[0].type == "NVIDIA H100 80GB"
        assert nodes[2].version == "1.0"
        # merged_node_config: true means the node file was merged by the predecessor.
        assert cm.export_full_config()["merged_node_config"] is True
        assert cm.get_chain_node_config().signer_key_name == "join1"
    # Step 1: byte-identical backup, 0600.
    (backup,) = backups(config)
    assert backup.read_bytes() == raw
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    # Step 2: one import, recorded with path and checksum, by actor "migration".
    state = tmp_path / "state.db"
    rows = imports(state)
    legacy_rows = [r for r in rows if r[0] == "legacy_yaml"]
    assert legacy_rows == [
        ("legacy_yaml", str(config.resolve()), "sha256:" + hashlib.sha256(raw).hexdigest())
    ]
    assert {actor for actor, _, _ in audit_rows(state)} == {"migration"}
    # Step 3: the file holds the static keys only, in the old layout, 0600 (SPEC §11: the
    # 0640 of the legacy file loses its group bit).
    rewritten = plain_load(config)
    assert set(rewritten) == {"api", "chain_node", "ml_node_key_config", "nats"}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "    port: 8080\n" in config.read_text()  # untouched lines, indentation kept


def test_second_open_and_static_file_are_noops(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    with ConfigManager.open(config):
        pass
    before = config.stat()
    content = config.read_bytes()
    with ConfigManager.open(config) as cm:
        assert cm.legacy_report is None
        assert cm.get_height() == 183467
    after = config.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert config.read_bytes() == content
    assert len(backups(config)) == 1
    assert len([r for r in imports(tmp_path / "state.db") if r[0] == "legacy_yaml"]) == 1


def test_already_static_file_is_not_touched(config_file: Path) -> None:
    before = config_file.stat()
    with ConfigManager.open(config_file) as cm:
        assert cm.legacy_report is None
    assert config_file.stat().st_mtime_ns == before.st_mtime_ns
    assert backups(config_file) == []


# --- the hand-edited file ------------------------------------------------------------------


def test_hand_edited_file_odd_shapes(tmp_path: Path) -> None:
    config = write(tmp_path, HAND_EDITED)
    with ConfigManager.open(config) as cm:
        nodes = {n.id: n for n in cm.get_nodes()}
        big = nodes["gpu-big"]
        # models given as a list of one-key maps
        assert big.models["Qwen/Qwen2.5-7B-Instruct"].args == []
        assert big.models["deepseek/DeepSeek-R1"].args == ["--tp", "8"]
        assert big.hardware[0].count == 8
        small = nodes["gpu-small"]
        assert small.is_enabled is False
        assert small.models["Qwen/Qwen2.5-7B-Instruct"].args == []
        assert cm.get_height() == 98000  # quoted number
        # The old writer's seed height is no field today: kept, and written back by rollback.
        current = cm.get_current_seed()
        assert current == SeedInfo(seed=77, epoch_index=12, signature="abc", height=97000)
        assert current.model_extra == {"height": 97000}
        assert cm.get_previous_seed().seed == 76
        assert cm.get_upcoming_seed() == SeedInfo()
        assert cm.get_node_versions() == []
        assert cm.get_upgrade_plan().name == ""
        chain = cm.backend.chain_state()
        assert chain["last_processed_height"] == "97999"
        assert chain["last_used_version"] == "v0.1.7"
        # KeyringPassword stays in the file and is used as the password (KEYRING_PASSWORD unset)
        password = cm.get_chain_node_config().keyring_password
        assert password is not None and password.get_secret_value() == "s3cret-from-2024"
        export = cm.export_full_config()
        assert export["telemetry"] == {"endpoint": "http://otel:4317"}
        assert export["last_processed_height"] == 97999
        # Fields no model knows are stored with their entry and come back in exports.
        assert big.model_extra == {"owner": "dana"}
        assert big.hardware[0].model_extra == {"vendor": "nvidia"}
        exported = {n["id"]: n for n in export["nodes"]}["gpu-big"]
        assert exported["owner"] == "dana"
        assert exported["hardware"][0]["vendor"] == "nvidia"
        assert export["current_seed"]["height"] == 97000
    # ... and the import records where they were.
    with sqlite_file(tmp_path / "state.db") as conn:
        (details,) = conn.execute(
            "SELECT details FROM legacy_imports WHERE kind = 'legacy_yaml'"
        ).fetchone()
    kept = json.loads(details)["kept_unknown_fields"]
    assert {"nodes[0].owner", "nodes[0].hardware[0].vendor", "current_seed.height"} <= set(kept)


def test_rewrite_keeps_every_comment_and_unknown_key(tmp_path: Path) -> None:
    config = write(tmp_path, HAND_EDITED)
    with ConfigManager.open(config):
        pass
    text = config.read_text()
    # Every line outside the moved entries is kept byte for byte, in order.
    static_lines = [line for line in HAND_EDITED.splitlines() if not _in_dynamic_entry(line)]
    assert [line for line in text.splitlines() if line.strip() and line[0] != "#"] == [
        line for line in static_lines if line.strip() and line[0] != "#"
    ]
    # Every comment survives; those of moved entries say which key they were about.
    for line in HAND_EDITED.splitlines():
        if "#" in line:
            comment = line[line.index("#") :].lstrip("#").strip()
            assert comment in text, comment
    for kept in (
        "# nodes: the big box",
        "# nodes.owner: unknown key inside a node",
        "# current_height: someone quoted it",
        "# current_seed.height: pre-epoch field",
    ):
        assert kept in text.splitlines()
    for comment in (
        '# dapi config for node "hal" -- edited by hand, ask Dana before changing ports!',
        "  port: 8080   # public API",
        "  future_flag: on          # unknown key inside a known section: kept",
        "# chain connection",
        "# message bus",
        "telemetry:                  # unknown top-level key: stays",
        "# trailing operator note",
    ):
        assert comment in text.splitlines()
    data = plain_load(config)
    assert data["telemetry"] == {"endpoint": "http://otel:4317"}
    assert data["api"]["future_flag"] == "on"
    assert data["chain_node"]["KeyringPassword"] == "s3cret-from-2024"
    assert not set(DYNAMIC) & set(data)


def _in_dynamic_entry(line: str) -> bool:
    """True for lines of HAND_EDITED inside a dynamic key's entry (comments included)."""
    current: str | None = None
    inside: set[str] = set()
    for raw in HAND_EDITED.splitlines():
        if raw and not raw[0].isspace() and not raw.startswith("#"):
            current = raw.split(":")[0]
        elif raw.startswith("#"):
            current = None
        if current in DYNAMIC and raw.strip():
            inside.add(raw)
    return line in inside


def test_comments_between_moved_keys_survive(tmp_path: Path) -> None:
    text = (
        "# top\n"
        "current_height: 5   # height\n"
        "# about the api\n"
        "api:\n"
        "  port: 8081\n"
        "nodes:\n"
        "  - id: a\n"
        "    host: h\n"
        "    inference_port: 1\n"
        "    poc_port: 2\n"
        "# about nats\n"
        "nats:\n"
        "  port: 4223\n"
        "current_seed: {seed: 1, epoch_index: 1, signature: x}\n"
        "# the end\n"
    )
    config = write(tmp_path, text)
    with ConfigManager.open(config) as cm:
        assert cm.get_height() == 5
        assert cm.get_current_seed().seed == 1
    assert config.read_text() == (
        "# top\n# current_height: height\n# about the api\napi:\n  port: 8081\n"
        "# about nats\nnats:\n  port: 4223\n# the end\n"
    )


def test_flow_style_file_is_rewritten_by_the_parser(tmp_path: Path) -> None:
    config = write(tmp_path, '{api: {port: 8082}, current_height: 7, extra: "x"}\n')
    with ConfigManager.open(config) as cm:
        assert cm.get_height() == 7
    assert plain_load(config) == {"api": {"port": 8082}, "extra": "x"}


def test_file_with_only_dynamic_keys(tmp_path: Path) -> None:
    config = write(tmp_path, "current_height: 9\nnodes:\n")
    with ConfigManager.open(config) as cm:
        assert cm.get_height() == 9
        assert cm.get_nodes() == []
    assert plain_load(config) is None


def test_empty_sections(tmp_path: Path) -> None:
    text = (
        "api:\nnodes:\nnode_versions:\ncurrent_seed:\nupgrade_plan:\nvalidation_params:\n"
        "bandwidth_params:\nmerged_node_config:\n"
    )
    config = write(tmp_path, text)
    with ConfigManager.open(config) as cm:
        assert cm.get_nodes() == []
        assert cm.get_current_seed() == SeedInfo()
    assert plain_load(config) == {"api": None}


def test_args_and_capitalised_args(tmp_path: Path) -> None:
    node = {"id": "n", "host": "h", "inference_port": 1, "poc_port": 2}
    state = parse_legacy_state(
        {
            "nodes": [
                {**node, "id": "a", "models": {"m": {"Args": ["x"]}}},
                {**node, "id": "b", "models": {"m": {"args": ["y"]}}},
                {**node, "id": "c", "models": {"m": {"args": ["z"], "Args": ["z"]}}},
                {**node, "id": "d", "models": [{"m": None}, {"k": {"Args": ["1"]}}]},
            ]
        },
        "f.yaml",
    )
    assert state.nodes is not None
    assert state.nodes[0].models["m"].args == ["x"]
    assert state.nodes[1].models["m"].args == ["y"]
    assert state.nodes[2].models["m"].args == ["z"]
    assert state.nodes[3].models["k"].args == ["1"]


def test_upgrade_plan_node_version_and_claimed(tmp_path: Path) -> None:
    state = parse_legacy_state(
        {
            "upgrade_plan": {"name": "v2", "height": 10, "binaries": None, "node_version": "v2"},
            "upcoming_seed": {"seed": "12", "epoch_index": 3, "signature": 1234, "claimed": True},
            "node_versions": [{"height": 10, "version": "v2"}, {"height": 10, "version": "v2"}],
        },
        "f.yaml",
    )
    assert state.upgrade_plan is not None and state.upgrade_plan.node_version == "v2"
    assert state.seeds["upcoming"] == SeedInfo(
        seed=12, epoch_index=3, signature="1234", claimed=True
    )
    assert state.node_versions is not None and len(state.node_versions) == 1


# --- malformed legacy values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("current_height: -5\n", ["current_height", "-5"]),
        ("current_height: twelve\n", ["current_height", "twelve"]),
        ("current_node_version: [1, 2]\n", ["current_node_version", "[1, 2]"]),
        ("nodes: {a: 1}\n", ["nodes", "{'a': 1}"]),
        ("nodes:\n  - id: a\n    host: h\n    inference_port: 99999\n    poc_port: 1\n",
         ["nodes[0].inference_port", "99999"]),
        ("current_seed: {seed: abc}\n", ["current_seed.seed", "abc"]),
        ("current_seed: 5\n", ["current_seed", "5"]),
        ("merged_node_config: maybe\n", ["merged_node_config", "maybe"]),
        ("node_versions: {versions: [{height: x, version: v}]}\n",
         ["node_versions.versions[0].height", "x"]),
        ("bandwidth_params: {kb_per_input_token: -1}\n",
         ["bandwidth_params.kb_per_input_token", "-1"]),
        ("upgrade_plan: {binaries: [a]}\n", ["upgrade_plan.binaries", "['a']"]),
    ],
)  # fmt: skip
def test_malformed_values_change_nothing(tmp_path: Path, snippet: str, expected: list[str]) -> None:
    config = write(tmp_path, "api:\n  port: 8080\n" + snippet)
    before = config.read_bytes()
    mtime = config.stat().st_mtime_ns
    with pytest.raises(ConfigError) as info:
        ConfigManager.open(config)
    message = str(info.value)
    assert str(config) in message
    for part in expected:
        assert part in message, message
    assert config.read_bytes() == before
    assert config.stat().st_mtime_ns == mtime
    assert backups(config) == []
    assert not (tmp_path / "state.db").exists()


def test_invalid_static_part_stops_before_anything(tmp_path: Path) -> None:
    # (0 would be "not set", as the predecessor read it: a port out of range is invalid.)
    config = write(tmp_path, GO_WRITER.replace("port: 4222", "port: 70000"))
    with pytest.raises(ConfigError, match=r"nats\.port"):
        ConfigManager.open(config)
    assert backups(config) == []
    assert not (tmp_path / "state.db").exists()


def test_dry_run_plan_changes_nothing(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    before = config.stat().st_mtime_ns
    report = plan_migration(config)
    assert report.action == "dry_run"
    assert "nodes" in report.keys and report.moved["nodes"] == ["node1", "node2", "3"]
    assert config.stat().st_mtime_ns == before
    assert backups(config) == []
    assert not (tmp_path / "state.db").exists()


def test_migrate_legacy_false_leaves_file(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    with ConfigManager.open(config, migrate_legacy=False) as cm:
        assert cm.get_height() == 0
    assert config.read_text() == GO_WRITER


def test_risky_operation_hook_runs_before_import(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    seen: list[tuple[str, int]] = []

    class Recorder(ConfigManager):
        def before_risky_operation(self, what: str) -> None:
            seen.append((what, len(self.get_nodes())))

    with Recorder.open(config):
        pass
    assert seen == [("legacy-migration", 0)]


# --- rollback ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [GO_WRITER, HAND_EDITED])
def test_round_trip_legacy_migrate_rollback(tmp_path: Path, source: str) -> None:
    config = write(tmp_path, source)
    original = plain_load(config)
    with ConfigManager.open(config) as cm:
        before = dynamic_view(cm)
        out = cm.write_rollback(tmp_path / "rollback.yaml")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rolled = plain_load(out)
    # Both files, read by a plain loader, carry the same dynamic values.
    for doc in (original, rolled):
        state = parse_legacy_state(doc, "x")
        assert state.current_height == before["height"]
        assert [n.model_dump() for n in state.nodes or []] == before["nodes"]
        assert [s.model_dump() for s in (state.seeds["current"], state.seeds["previous"])] == (
            before["seeds"][:2]
        )
        assert state.upgrade_plan is not None
        assert state.upgrade_plan.model_dump() == before["plan"]
        # Both files list the schedule as the Go stack does: highest first.
        listed = [v.model_dump() for v in state.node_versions or []]
        assert listed == sorted(before["schedule"], key=lambda v: -v["height"])
        if doc.get("validation_params"):
            assert state.validation_params is not None
            assert state.validation_params.model_dump() == before["validation"]
    # Static values and unknown keys come back too.
    assert rolled["api"]["port"] == original["api"]["port"]
    assert rolled["chain_node"]["KeyringPassword"] == original["chain_node"]["KeyringPassword"]
    if "telemetry" in original:
        assert rolled["telemetry"] == original["telemetry"]
    # Migrating the rollback file again gives the same state (the old binary's round trip).
    second = tmp_path / "second"
    second.mkdir()
    copy = second / "config.yaml"
    copy.write_bytes(out.read_bytes())
    with ConfigManager.open(copy) as cm2:
        assert dynamic_view(cm2) == before


def test_rollback_is_in_the_go_writer_layout(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    with ConfigManager.open(config) as cm:
        cm.create_worker_key()
        out = cm.write_rollback(tmp_path / "rollback.yaml")
        public = cm.get_ml_node_key_config().worker_public
    text = out.read_text()
    top = [line.split(":")[0] for line in text.splitlines() if line and not line[0].isspace()]
    assert top == sorted(top)
    assert (
        '\n    versions:\n        - height: 250000\n          version: "2.1"\n'
        "        - height: 190000\n          version: v0.2.0\n" in text
    )
    assert 'signature: "0011223344"' in text
    assert "            Args:\n" not in text  # the new writer uses args
    doc = plain_load(out)
    assert doc["ml_node_key_config"]["worker_public"] == public
    assert doc["ml_node_key_config"]["worker_private"]  # the old binary needs its key


def test_rollback_never_writes_the_environment_password(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYRING_PASSWORD", "from-env-secret")
    with ConfigManager.open(config_file) as cm:
        out = cm.write_rollback(tmp_path / "rb.yaml")
    assert "from-env-secret" not in out.read_text()


def test_rollback_to_unwritable_place_is_a_clear_error(config_file: Path, tmp_path: Path) -> None:
    with ConfigManager.open(config_file) as cm, pytest.raises(ConfigError, match="rollback"):
        cm.write_rollback(tmp_path / "missing-dir" / "rb.yaml")


def test_migration_of_many_nodes(tmp_path: Path) -> None:
    nodes = [
        InferenceNodeConfig(
            id=f"n{i}", host=f"10.0.{i // 250}.{i % 250}", inference_port=5000, poc_port=8080
        ).model_dump(mode="json")
        for i in range(500)
    ]
    config = write(tmp_path, "api:\n  port: 8080\n" + _yaml_block("nodes", nodes))
    with ConfigManager.open(config) as cm:
        assert len(cm.get_nodes()) == 500
    assert os.path.getsize(config) < 100


def _yaml_block(key: str, value: Any) -> str:
    from dapi_config._goyaml import render_go_yaml

    return render_go_yaml({key: value})


# --- property: any legacy state survives legacy -> migrate -> rollback ----------------------

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_ints = st.integers(min_value=0, max_value=2**63 - 1)
#: Text fields of the state hold no control characters (the models refuse them everywhere;
#: SPEC §9): a node's, a version's, the plan's, a seed's signature.
_node_chars = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\u2028\u2029"
)
_node_text = st.text(alphabet=_node_chars, max_size=12)
_node = st.fixed_dictionaries(
    {
        "host": st.from_regex(
            r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9-]{0,8}[a-z0-9]){0,2}", fullmatch=True
        ),
        "inference_port": st.integers(1, 65535),
        "poc_port": st.integers(1, 65535),
        "inference_segment": _node_text,
        "version": _node_text,
        "max_concurrent": st.integers(0, 1000),
        "is_enabled": st.booleans(),
        "models": st.dictionaries(
            st.text(alphabet=_node_chars, min_size=1, max_size=10),
            st.fixed_dictionaries({"Args": st.lists(_node_text)}),
        ),
        "hardware": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.text(alphabet=_node_chars, min_size=1, max_size=8),
                    "count": st.integers(0, 64),
                }
            ),
            max_size=2,
        ),
    }
)
_seed = st.fixed_dictionaries(
    {
        "seed": st.integers(-(2**63), 2**63 - 1),
        "epoch_index": _ints,
        "signature": _node_text,
        "claimed": st.booleans(),
    }
)
_legacy = st.fixed_dictionaries(
    {
        "current_height": _ints,
        "current_node_version": _text,
        "current_seed": _seed,
        "previous_seed": _seed,
        "upcoming_seed": _seed,
        "nodes": st.lists(_node, max_size=4),
        "node_versions": st.lists(
            st.fixed_dictionaries(
                {"height": _ints, "version": st.text(alphabet=_node_chars, min_size=1, max_size=10)}
            ),
            max_size=3,
            unique_by=lambda v: (v["height"], v["version"]),
        ),
        "upgrade_plan": st.fixed_dictionaries(
            {
                "name": _node_text,
                "height": _ints,
                "binaries": st.dictionaries(
                    st.text(alphabet=_node_chars, min_size=1, max_size=8), _node_text, max_size=2
                ),
                "node_version": _node_text,
            }
        ),
        "validation_params": st.fixed_dictionaries(
            {"timestamp_expiration": _ints, "timestamp_advance": _ints, "expiration_blocks": _ints}
        ),
        "bandwidth_params": st.fixed_dictionaries(
            {
                "estimated_limits_per_block_kb": _ints,
                "kb_per_input_token": st.floats(0, 1e9),
                "kb_per_output_token": st.floats(0, 1e9),
            }
        ),
    }
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_legacy)
def test_any_legacy_state_round_trips(tmp_path_factory: pytest.TempPathFactory, data: Any) -> None:
    from dapi_config._goyaml import render_go_yaml

    data = dict(data)
    data["nodes"] = [{**n, "id": f"node-{i}"} for i, n in enumerate(data["nodes"])]
    data["node_versions"] = {"versions": data["node_versions"]}
    data["api"] = {"port": 8080}
    workdir = tmp_path_factory.mktemp("prop")
    config = write(workdir, render_go_yaml(data))
    expected = parse_legacy_state(plain_load(config), "original", warn=False)
    with ConfigManager.open(config) as cm:
        out = cm.write_rollback(workdir / "rollback.yaml")
    got = parse_legacy_state(plain_load(out), "rollback", warn=False)
    assert got.nodes == expected.nodes
    assert got.seeds == expected.seeds
    assert got.upgrade_plan == expected.upgrade_plan
    assert got.validation_params == expected.validation_params
    assert got.bandwidth_params == expected.bandwidth_params
    assert got.current_height == expected.current_height
    assert got.current_node_version == expected.current_node_version
    assert sorted(got.node_versions or [], key=repr) == sorted(
        expected.node_versions or [], key=repr
    )
