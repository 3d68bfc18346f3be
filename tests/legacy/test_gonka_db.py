"""The later predecessor's own SQLite state, ``gonka.db``, built here with the schema and the
value encodings its Go store wrote (``apiconfig/sqlite_store.go``: ``kv_config.value_json`` is
Go's ``json.Marshal`` of the value, nodes carry ``models_json``/``hardware_json``, seeds keep
their history with ``is_active``). Its YAML then holds zeros, as that binary left it."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from dapi_config import ConfigError, ConfigManager
from dapi_config.legacy import read_gonka_db
from dapi_config.models import REDACTED
from tests.conftest import run_cli, sqlite_file

# The Go store's schema, as EnsureSchema created it (after the base_url migration).
GO_SCHEMA = """
CREATE TABLE inference_nodes (
  id TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  inference_segment TEXT NOT NULL,
  inference_port INTEGER NOT NULL,
  poc_segment TEXT NOT NULL,
  poc_port INTEGER NOT NULL,
  max_concurrent INTEGER NOT NULL,
  models_json TEXT NOT NULL,
  hardware_json TEXT NOT NULL,
  updated_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')),
  created_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')),
  base_url TEXT NOT NULL DEFAULT '',
  auth_token TEXT NOT NULL DEFAULT ''
);
CREATE TABLE kv_config (
  key TEXT PRIMARY KEY,
  value_json TEXT NOT NULL,
  updated_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')),
  created_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now'))
);
CREATE TABLE seed_info (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL,
  seed INTEGER NOT NULL,
  epoch_index INTEGER NOT NULL,
  signature TEXT NOT NULL,
  claimed BOOLEAN NOT NULL DEFAULT 0,
  is_active BOOLEAN NOT NULL DEFAULT 1,
  created_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now'))
);
CREATE TABLE bls_dealer_openings (
  epoch_id INTEGER NOT NULL,
  recipient_index INTEGER NOT NULL,
  ciphertext_index INTEGER NOT NULL,
  slot_index INTEGER NOT NULL,
  share_bytes BLOB NOT NULL,
  seed BLOB NOT NULL,
  updated_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')),
  created_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')),
  PRIMARY KEY(epoch_id, recipient_index, ciphertext_index)
);
CREATE INDEX idx_bls_dealer_openings_epoch_id ON bls_dealer_openings(epoch_id);
"""

TOKEN = "mlnode-token-0c0ffee"
WORKER_PRIVATE = base64.b64encode(b"p" * 64).decode()
WORKER_PUBLIC = base64.b64encode(b"q" * 32).decode()
SHARE = b"\x01\x02secret-share\xff"

# What that binary's YAML held once its state lived in gonka.db: static keys and zeros.
ZEROED_YAML = """\
api:
    port: 8080
chain_node:
    url: http://chain:26657
current_height: 0
current_node_version: ""
merged_node_config: false
nodes: []
upgrade_plan:
    binaries: {}
    height: 0
    name: ""
    node_version: ""
"""


def go_json(value: object) -> str:
    """Go's json.Marshal: compact, struct fields in declaration order."""
    return json.dumps(value, separators=(",", ":"))


def make_gonka_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(GO_SCHEMA)
    node_columns = (
        "id, host, inference_segment, inference_port, poc_segment, poc_port, max_concurrent, "
        "models_json, hardware_json, base_url, auth_token"
    )
    conn.execute(
        f"INSERT INTO inference_nodes({node_columns}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        ("cloud-1", "", "", 0, "", 0, 32,
         go_json({"Qwen/Qwen3-32B": {"args": []}}), "null",
         "https://svc.provider.example", TOKEN),
    )  # fmt: skip
    conn.execute(
        f"INSERT INTO inference_nodes({node_columns}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        ("gpu-a", "mlnode-a", "/v1", 5000, "/api/v1", 8080, 500,
         go_json({"Qwen/Qwen3-32B": {"args": ["--tp", "8"],
                  "model_override": {"hf_repo": "acme/q", "hf_commit": "a" * 40}}}),
         go_json([{"type": "H100", "count": 8}]), "", ""),
    )  # fmt: skip
    kv = {
        "current_height": go_json(905_112),
        "last_processed_height": go_json(905_111),
        "current_node_version": go_json("v3.1.0"),
        "last_used_version": go_json("v3.1.0"),
        "upgrade_plan": go_json(
            {"name": "v3.2.0", "height": 910_000, "binaries": None, "node_version": "v3.2.0"}
        ),
        "validation_params": go_json(
            {"timestamp_expiration": 60, "timestamp_advance": 30, "expiration_blocks": 20,
             "logprobs_mode": "full"}
        ),
        "bandwidth_params": go_json(
            {"estimated_limits_per_block_kb": 21000, "kb_per_input_token": 0.0023,
             "kb_per_output_token": 0.64, "max_inferences_per_block": 400}
        ),
        "poc_params": go_json({"models": [{"model_id": "Qwen/Qwen3-32B", "seq_len": 1024}]}),
        "ml_node_key_config": go_json(
            {"worker_public": WORKER_PUBLIC, "worker_private": WORKER_PRIVATE}
        ),
        "node_config_merged": go_json(True),
        "config_migrated": go_json(True),
        "devshard_runtime": go_json({"max_nonce": 7}),
    }  # fmt: skip
    conn.executemany("INSERT INTO kv_config(key, value_json) VALUES (?, ?)", kv.items())
    seeds = [
        ("current", 111, 140, "sig-140", 1, 0),
        ("current", 222, 141, "sig-141", 1, 1),
        ("previous", 111, 140, "sig-140", 1, 1),
        ("upcoming", 333, 142, "sig-142", 0, 1),
    ]
    conn.executemany(
        "INSERT INTO seed_info(type, seed, epoch_index, signature, claimed, is_active) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        seeds,
    )
    conn.execute(
        "INSERT INTO bls_dealer_openings(epoch_id, recipient_index, ciphertext_index, "
        "slot_index, share_bytes, seed) VALUES (141, 2, 3, 9, ?, ?)",
        (SHARE, b"seed-bytes"),
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def later_era(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "config.yaml"
    config.write_text(ZEROED_YAML)
    config.chmod(0o600)
    data = tmp_path / "dapi"
    data.mkdir()
    return config, make_gonka_db(data / "gonka.db")


def test_migrate_gonka_db_imports_everything_sealed(later_era: tuple[Path, Path]) -> None:
    config, gonka = later_era
    before = gonka.read_bytes()
    result = run_cli("--config", str(config), "migrate", "--gonka-db", str(gonka), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)["gonka_db"]
    assert report["action"] == "imported" and report["nodes"] == 2 and report["openings"] == 1
    assert gonka.read_bytes() == before  # the predecessor's file is never changed
    with ConfigManager.open(config) as cm:
        nodes = {n.id: n for n in cm.get_nodes()}
        assert list(nodes) == ["cloud-1", "gpu-a"]
        token = nodes["cloud-1"].auth_token
        assert token is not None and token.get_secret_value() == TOKEN
        assert nodes["gpu-a"].auth_token is None
        override = nodes["gpu-a"].models["Qwen/Qwen3-32B"].model_override
        assert override is not None and override.hf_repo == "acme/q"
        assert cm.get_height() == 905_112  # gonka.db wins over the YAML's zeros
        assert cm.get_current_node_version() == "v3.1.0"
        assert cm.get_upgrade_plan().name == "v3.2.0"
        assert cm.get_validation_params().logprobs_mode == "full"
        assert cm.get_bandwidth_params().max_inferences_per_block == 400
        assert cm.get_poc_params().models[0].seq_len == 1024
        current = cm.get_current_seed()
        assert (current.seed, current.epoch_index, current.claimed) == (222, 141, True)
        assert cm.get_upcoming_seed().claimed is False
        keys = cm.get_ml_node_key_config()
        assert (keys.worker_public, keys.worker_private) == (WORKER_PUBLIC, WORKER_PRIVATE)
        tables = cm.export_tables()
    assert {r["key"] for r in tables["predecessor_kv"]} == {
        "config_migrated",
        "devshard_runtime",
        "node_config_merged",
    }
    (opening,) = tables["bls_dealer_openings"]
    assert opening["share_bytes"] == REDACTED and opening["slot_index"] == 9
    state = config.parent / "state.db"
    raw = state.read_bytes()
    for secret in (TOKEN, WORKER_PRIVATE, base64.b64encode(SHARE).decode()):
        assert secret.encode() not in raw
    with sqlite_file(state) as conn:
        history = conn.execute(
            "SELECT seed, is_active FROM seed_info WHERE type = 'current' ORDER BY id"
        ).fetchall()
        kinds = [r[0] for r in conn.execute("SELECT kind FROM legacy_imports ORDER BY id")]
    assert history == [(111, 0), (222, 1)]  # history kept
    assert "gonka_db" in kinds
    # A backup of the state was taken before the import.
    assert any("pre-gonka-db-import" in p.name for p in (state.parent / "backups").iterdir())

    again = run_cli("--config", str(config), "migrate", "--gonka-db", str(gonka), "--json")
    assert json.loads(again.stdout)["gonka_db"]["action"] == "already"


def test_gonka_db_beside_the_config_is_imported_at_open(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(ZEROED_YAML)
    config.chmod(0o600)
    make_gonka_db(tmp_path / "gonka.db")
    with ConfigManager.open(config) as cm:
        assert cm.get_height() == 905_112
        assert len(cm.get_nodes()) == 2
        revision = cm.latest_revision()
    with ConfigManager.open(config) as cm:  # once: the second open imports nothing
        assert cm.latest_revision() == revision


def test_api_sqlite_path_names_the_file(
    later_era: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, gonka = later_era
    monkeypatch.setenv("API_SQLITE_PATH", str(gonka))
    # A read-only command never imports ...
    status = run_cli(
        "--config", str(config), "status", "--json", env={"API_SQLITE_PATH": str(gonka)}
    )
    assert not (config.parent / "state.db").exists(), status.stderr
    # ... an open does.
    with ConfigManager.open(config) as cm:
        assert [n.id for n in cm.get_nodes()] == ["cloud-1", "gpu-a"]


def test_a_file_that_is_not_gonka_db_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(ZEROED_YAML)
    config.chmod(0o600)
    other = tmp_path / "other.db"
    with sqlite_file(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    result = run_cli("--config", str(config), "migrate", "--gonka-db", str(other))
    assert result.returncode == 1
    assert "not the predecessor's gonka.db" in (result.stdout + result.stderr)
    with ConfigManager.open(config) as cm:
        assert cm.get_nodes() == [] and cm.get_height() == 0


def test_bad_value_in_gonka_db_changes_nothing(later_era: tuple[Path, Path]) -> None:
    config, gonka = later_era
    with sqlite_file(gonka) as conn:
        conn.execute("UPDATE inference_nodes SET inference_port = 70000 WHERE id = 'gpu-a'")
    with ConfigManager.open(config) as cm:
        before = cm.latest_revision()
        with pytest.raises(ConfigError) as err:
            cm.import_gonka_db(gonka)
        assert "inference_nodes[1].inference_port" in str(err.value)
        assert cm.latest_revision() == before
        assert cm.get_nodes() == []


def test_the_node_file_it_merged_is_not_taken_for_a_changed_one(
    later_era: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Reproduction: after a gonka.db import every start warned that node_config.json changed
    since it was merged and advised `nodes import --replace`, which would drop every node
    added through the admin API. The file had not changed."""
    config, gonka = later_era
    node_file = config.parent / "node_config.json"
    node_file.write_text(
        '[{"id": "gpu-a", "host": "mlnode-a", "inference_port": 5000, "poc_port": 8080}]'
    )
    env = {"API_SQLITE_PATH": str(gonka), "NODE_CONFIG_PATH": str(node_file)}
    for _ in range(3):
        with caplog.at_level(logging.WARNING), ConfigManager.open(config, env=env) as cm:
            assert [n.id for n in cm.get_nodes()] == ["cloud-1", "gpu-a"]
    assert "changed since it was merged" not in caplog.text
    node_file.write_text(
        '[{"id": "gpu-b", "host": "mlnode-b", "inference_port": 5000, "poc_port": 8080}]'
    )
    with caplog.at_level(logging.WARNING), ConfigManager.open(config, env=env) as cm:
        assert [n.id for n in cm.get_nodes()] == ["cloud-1", "gpu-a"]  # once: not applied
    assert "changed since it was merged" in caplog.text  # but a real change is said


def _dump(db: Path) -> list[str]:
    with sqlite_file(db) as conn:
        return list(conn.iterdump())


def _kv(gonka: Path) -> dict[str, str]:
    with sqlite_file(gonka) as conn:
        return dict(conn.execute("SELECT key, value_json FROM kv_config").fetchall())


def test_rollback_brings_gonka_db_up_to_date(later_era: tuple[Path, Path]) -> None:
    """Reproduction: rollback wrote only the YAML, which the SQLite-era binary never reads;
    pointed at it, that binary started from gonka.db as it was at the upgrade, and every node
    added and every height reached since vanished without a word."""
    config, gonka = later_era
    with ConfigManager.open(config, env={"API_SQLITE_PATH": str(gonka)}) as cm:
        cm.set_height(905_200)
        cm.add_node(
            {"id": "gpu-b", "host": "mlnode-b", "inference_port": 5000, "poc_port": 8080,
             "models": {"b/m": {"args": []}, "a/m": {"args": ["<x>&"]}},
             "max_concurrent": 100}
        )  # fmt: skip
        gpu_a = next(n for n in cm.get_nodes() if n.id == "gpu-a")
        cm.update_node(gpu_a.model_copy(update={"inference_port": 5001}))
        cm.remove_node("cloud-1")
        cm.set_upgrade_plan({"name": "v3.3.0", "height": 920_000, "node_version": "v3.3.0"})
        cm.set_current_seed({"seed": 444, "epoch_index": 143, "signature": "sig-143"})
    before = _dump(gonka)
    kv_before = _kv(gonka)
    out = config.parent / "rollback.yaml"
    result = run_cli("--config", str(config), "rollback", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["yaml"] == str(out) and "current_height: 905200" in out.read_text()
    written = report["gonka_db"]
    assert written["changed"] and written["nodes_deleted"] == ["cloud-1"]
    assert sorted(written["nodes_written"]) == ["gpu-a", "gpu-b"]
    assert written["seeds"] == ["current"]
    # The file as it was is kept, and the binary's reader finds the state in it.
    assert _dump(Path(written["backup"])) == before
    back = read_gonka_db(gonka)
    assert back.state.current_height == 905_200
    assert back.state.upgrade_plan is not None and back.state.upgrade_plan.name == "v3.3.0"
    assert [n.id for n in back.state.nodes or []] == ["gpu-a", "gpu-b"]
    assert back.state.seeds["current"].seed == 444
    assert back.worker == (WORKER_PUBLIC, WORKER_PRIVATE)
    # Its own encodings: json.Marshal's, a map's keys sorted, a nil slice as null, HTML
    # characters escaped; what did not change is byte for byte what the binary wrote.
    kv = _kv(gonka)
    assert kv["current_height"] == "905200"
    assert kv["upgrade_plan"] == (
        '{"name":"v3.3.0","height":920000,"binaries":{},"node_version":"v3.3.0"}'
    )
    for unchanged in ("validation_params", "bandwidth_params", "poc_params", "devshard_runtime",
                      "ml_node_key_config", "current_node_version", "config_migrated"):  # fmt: skip
        assert kv[unchanged] == kv_before[unchanged]
    with sqlite_file(gonka) as conn:
        models, hardware = conn.execute(
            "SELECT models_json, hardware_json FROM inference_nodes WHERE id = 'gpu-b'"
        ).fetchone()
        seeds = conn.execute(
            "SELECT seed, is_active FROM seed_info WHERE type = 'current' ORDER BY id"
        ).fetchall()
    assert models == '{"a/m":{"args":["\\u003cx\\u003e\\u0026"]},"b/m":{"args":[]}}'
    assert hardware == "null"
    assert seeds == [(111, 0), (222, 0), (444, 1)]  # SetActiveSeed's way: history kept
    # A second rollback finds it up to date: no new backup, the file untouched.
    after = gonka.read_bytes()
    again = run_cli("--config", str(config), "rollback", "--out", str(out), "--force")
    assert again.returncode == 0 and "already up to date" in again.stdout, again.stderr
    assert gonka.read_bytes() == after
    assert len(list(gonka.parent.glob("gonka.db.before-rollback.*"))) == 1


def test_rollback_refuses_a_gonka_db_changed_since_the_upgrade(
    later_era: tuple[Path, Path],
) -> None:
    config, gonka = later_era
    with ConfigManager.open(config, env={"API_SQLITE_PATH": str(gonka)}) as cm:
        cm.set_height(905_200)
    with sqlite_file(gonka) as conn:  # the old binary ran on it again
        conn.execute("UPDATE kv_config SET value_json = '905300' WHERE key = 'current_height'")
    changed = _dump(gonka)
    out = config.parent / "rollback.yaml"
    refused = run_cli("--config", str(config), "rollback", "--out", str(out))
    assert refused.returncode == 1 and not out.exists()
    assert "changed since this state took it" in refused.stderr
    assert "--overwrite-changed-gonka-db" in refused.stderr
    assert "Nothing was written" in refused.stderr
    assert _dump(gonka) == changed
    forced = run_cli(
        "--config", str(config), "rollback", "--out", str(out), "--overwrite-changed-gonka-db"
    )
    assert forced.returncode == 0, forced.stderr
    assert _kv(gonka)["current_height"] == "905200"
    (backup,) = gonka.parent.glob("gonka.db.before-rollback.*")
    assert _dump(backup) == changed and backup.stat().st_mode & 0o777 == 0o600


def test_rollback_without_the_gonka_db_says_what_to_do(later_era: tuple[Path, Path]) -> None:
    config, gonka = later_era
    with ConfigManager.open(config, env={"API_SQLITE_PATH": str(gonka)}) as cm:
        cm.set_height(905_200)
    gonka.rename(gonka.with_name("elsewhere.db"))
    out = config.parent / "rollback.yaml"
    refused = run_cli("--config", str(config), "rollback", "--out", str(out))
    assert refused.returncode == 1 and not out.exists()
    assert "is gone" in refused.stderr and "--yaml-only" in refused.stderr
    written = run_cli("--config", str(config), "rollback", "--out", str(out), "--yaml-only")
    assert written.returncode == 0, written.stderr
    assert "current_height: 905200" in out.read_text()


def test_rollback_yaml_only_leaves_gonka_db_alone(later_era: tuple[Path, Path]) -> None:
    config, gonka = later_era
    with ConfigManager.open(config, env={"API_SQLITE_PATH": str(gonka)}) as cm:
        cm.set_height(905_200)
    before = gonka.read_bytes()
    out = config.parent / "rollback.yaml"
    written = run_cli("--config", str(config), "rollback", "--out", str(out), "--yaml-only")
    assert written.returncode == 0, written.stderr
    assert gonka.read_bytes() == before and "current_height: 905200" in out.read_text()


def test_rollback_into_an_older_gonka_db(tmp_path: Path) -> None:
    """A file of the store's first release: no base_url/auth_token columns (the binary adds
    them on start), so a node of base-url mode needs them added as it would."""
    config = tmp_path / "config.yaml"
    config.write_text(ZEROED_YAML)
    config.chmod(0o600)
    gonka = tmp_path / "gonka.db"
    first_release = GO_SCHEMA.replace(
        ",\n  base_url TEXT NOT NULL DEFAULT '',\n  auth_token TEXT NOT NULL DEFAULT ''", ""
    )
    with sqlite_file(gonka) as conn:
        conn.executescript(first_release)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(inference_nodes)")]
        assert "base_url" not in columns
        conn.execute("INSERT INTO kv_config(key, value_json) VALUES ('current_height', '10')")
    with ConfigManager.open(config) as cm:
        assert cm.get_height() == 10
        cm.add_node(
            {"id": "cloud", "base_url": "https://svc.example", "auth_token": TOKEN,
             "models": {"m": {"args": []}}, "max_concurrent": 8}
        )  # fmt: skip
    result = run_cli("--config", str(config), "rollback", "--out", str(tmp_path / "r.yaml"))
    assert result.returncode == 0, result.stderr
    with sqlite_file(gonka) as conn:
        row = conn.execute("SELECT base_url, auth_token FROM inference_nodes").fetchone()
    assert row == ("https://svc.example", TOKEN)
