"""Per-node security keys, the worker key and the master key: lifecycle, encryption at rest,
clear errors for a wrong key, and secrets that never reach files, logs or messages."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dapi_config import (
    ConfigError,
    ConfigManager,
    InferenceNodeConfig,
    MasterKeyError,
    NodeNotFoundError,
    SecurityKeyExistsError,
    SecurityKeyNotFoundError,
    ValidationError,
)
from dapi_config.crypto import (
    REDACTED,
    MasterKeySource,
    SecretBox,
    fingerprint,
    key_file_path,
)
from dapi_config.export import render_legacy_yaml
from dapi_config.settings import STATE_KEY_ENV
from tests.conftest import EXAMPLE_CONFIG, run_cli

pytestmark = pytest.mark.both_backends

PASSPHRASE = "correct horse battery staple"


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host="10.0.0.5", inference_port=5000, poc_port=8080)


@pytest.fixture
def keyed(manager: ConfigManager) -> ConfigManager:
    """The manager with two nodes registered."""
    manager.add_nodes([node("n1"), node("n2")])
    return manager


# --- key lifecycle ----------------------------------------------------------------------------


def test_create_rotate_verify_and_versions(keyed: ConfigManager) -> None:
    first = keyed.create_security_key("n1")
    assert first.key_version == 1
    assert len(first.security_key) == 43  # 32 random bytes, URL-safe base64
    assert first.fingerprint == fingerprint(first.security_key)
    assert first.security_key not in repr(first)  # printing the object never shows the key
    assert keyed.verify_security_key("n1", first.security_key)

    with pytest.raises(SecurityKeyExistsError):
        keyed.create_security_key("n1")

    second = keyed.rotate_security_key("n1")
    third = keyed.rotate_security_key("n1")
    assert (second.key_version, third.key_version) == (2, 3)
    assert len({first.security_key, second.security_key, third.security_key}) == 3
    # Only the current key verifies: rotation invalidates the old ones at once.
    assert not keyed.verify_security_key("n1", first.security_key)
    assert not keyed.verify_security_key("n1", second.security_key)
    assert keyed.verify_security_key("n1", third.security_key)
    assert not keyed.verify_security_key("n2", third.security_key)

    info = keyed.get_security_key_info("n1")
    assert info.key_version == 3
    assert info.fingerprint == third.fingerprint
    assert info.created_at == first.created_at  # the node's key history started then
    assert info.updated_at == third.updated_at > first.updated_at
    assert "security_key" not in info.model_dump()
    assert [i.node_id for i in keyed.get_security_keys()] == ["n1"]


def test_reads_never_return_the_key(keyed: ConfigManager) -> None:
    issued = keyed.create_security_key("n1")
    dumped = json.dumps(
        [
            keyed.get_security_key_info("n1").model_dump(mode="json"),
            [i.model_dump(mode="json") for i in keyed.get_security_keys()],
            keyed.state_summary(),
            [n.model_dump(mode="json") for n in keyed.get_nodes()],
            keyed.export_full_config(),
        ]
    )
    assert issued.security_key not in dumped


def test_errors_for_missing_nodes_and_keys_change_nothing(keyed: ConfigManager) -> None:
    revision = keyed.latest_revision()
    with pytest.raises(NodeNotFoundError):
        keyed.create_security_key("ghost")
    with pytest.raises(NodeNotFoundError):
        keyed.rotate_security_key("ghost")
    with pytest.raises(SecurityKeyNotFoundError):
        keyed.rotate_security_key("n1")  # rotation needs an existing key
    with pytest.raises(SecurityKeyNotFoundError):
        keyed.get_security_key_info("n1")
    with pytest.raises(SecurityKeyNotFoundError):
        keyed.delete_security_key("n1")
    for bad in ("", None, 5):
        with pytest.raises(ValidationError):
            keyed.create_security_key(bad)  # type: ignore[arg-type]
    assert not keyed.verify_security_key("ghost", "x")
    assert not keyed.verify_security_key("n1", "x")
    assert keyed.latest_revision() == revision
    assert keyed.get_security_keys() == []


def test_delete_revokes(keyed: ConfigManager) -> None:
    issued = keyed.create_security_key("n1")
    revoked = keyed.delete_security_key("n1")
    assert revoked.key_version == 1
    assert not keyed.verify_security_key("n1", issued.security_key)
    again = keyed.create_security_key("n1")  # a fresh history starts at version 1
    assert again.key_version == 1
    assert again.security_key != issued.security_key


def test_removing_a_node_removes_its_key(keyed: ConfigManager) -> None:
    issued = keyed.create_security_key("n1")
    keyed.create_security_key("n2")
    keyed.remove_node("n1")
    assert keyed.backend.security_key("n1") is None  # ON DELETE CASCADE (foreign_keys=ON)
    keyed.add_node(node("n1"))
    assert not keyed.verify_security_key("n1", issued.security_key)
    with pytest.raises(SecurityKeyNotFoundError):
        keyed.get_security_key_info("n1")
    assert [i.node_id for i in keyed.get_security_keys()] == ["n2"]


def test_set_nodes_keeps_keys_of_nodes_that_stay(keyed: ConfigManager) -> None:
    k1 = keyed.create_security_key("n1")
    keyed.create_security_key("n2")
    keyed.set_nodes([node("n3"), node("n1").model_copy(update={"host": "10.9.9.9"})])
    assert [n.id for n in keyed.get_nodes()] == ["n3", "n1"]  # the new order holds
    assert keyed.get_node("n1").host == "10.9.9.9"
    assert keyed.verify_security_key("n1", k1.security_key)
    assert keyed.backend.security_key("n2") is None
    keyed.add_node(node("n4"))
    assert [n.id for n in keyed.get_nodes()] == ["n3", "n1", "n4"]


def test_keys_survive_reopen_with_the_key_file(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(node("n1"))
        issued = cm.create_security_key("n1")
        public = cm.create_worker_key()
        private = cm.get_ml_node_key_config().worker_private
    with ConfigManager.open(config_file) as cm:
        assert cm.verify_security_key("n1", issued.security_key)
        assert cm.get_ml_node_key_config().worker_public == public
        assert cm.get_ml_node_key_config().worker_private == private
        assert cm.check_master_key().startswith("key file")


def test_a_rotated_worker_key_is_audited_by_fingerprint(manager: ConfigManager) -> None:
    manager.create_worker_key()
    first = manager.get_ml_node_key_config().worker_private
    manager.create_worker_key()
    second = manager.get_ml_node_key_config().worker_private
    row = manager.get_audit(since=manager.latest_revision() - 1)[0]
    assert (row.old_value, row.new_value) == (fingerprint(first), fingerprint(second))


# --- the master key ---------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_key_file_is_created_0600_only_when_a_secret_is_stored(manager: ConfigManager) -> None:
    key_file = key_file_path(manager.state_path)
    manager.set_height(5)
    assert not key_file.exists()
    manager.create_worker_key()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(key_file.read_text())) == 32


def test_api_state_key_is_used_instead_of_a_key_file(config_file: Path) -> None:
    env = {STATE_KEY_ENV: PASSPHRASE}
    with ConfigManager.open(config_file, env=env) as cm:
        cm.add_node(node("n1"))
        issued = cm.create_security_key("n1")
        assert cm.check_master_key() == STATE_KEY_ENV
    assert not key_file_path(config_file.parent / "state.db").exists()
    with ConfigManager.open(config_file, env=env) as cm:
        assert cm.verify_security_key("n1", issued.security_key)


def test_short_api_state_key_is_a_clear_config_error(config_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        ConfigManager.open(config_file, env={STATE_KEY_ENV: "tooshort123"})
    message = str(caught.value)
    assert "API_STATE_KEY" in message and "11 characters" in message
    assert "tooshort123" not in message


def test_wrong_api_state_key_is_a_clear_error_not_garbage(config_file: Path) -> None:
    with ConfigManager.open(config_file, env={STATE_KEY_ENV: PASSPHRASE}) as cm:
        cm.add_node(node("n1"))
        cm.create_security_key("n1")
        cm.create_worker_key()
    wrong = "the wrong passphrase, long enough"
    with ConfigManager.open(config_file, env={STATE_KEY_ENV: wrong}) as cm:
        cm.set_height(7)  # state without secrets stays usable
        revision = cm.latest_revision()
        for call in (
            cm.check_master_key,
            cm.get_ml_node_key_config,
            cm.get_security_keys,
            lambda: cm.verify_security_key("n1", "x"),
            lambda: cm.rotate_security_key("n1"),
            cm.create_worker_key,
            lambda: cm.export_full_config(include_secrets=True),
        ):
            with pytest.raises(MasterKeyError) as caught:
                call()
            assert "does not open" in str(caught.value)
            assert wrong not in str(caught.value) and PASSPHRASE not in str(caught.value)
        assert cm.latest_revision() == revision  # the failed writes wrote nothing
        assert cm.export_full_config()["ml_node_key_config"]["worker_private"] == REDACTED
    with (
        ConfigManager.open(config_file, env={}) as cm,
        pytest.raises(MasterKeyError, match="API_STATE_KEY, which is not set"),
    ):
        cm.check_master_key()


def test_api_state_key_cannot_open_secrets_of_the_key_file(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.create_worker_key()
    with (
        ConfigManager.open(config_file, env={STATE_KEY_ENV: PASSPHRASE}) as cm,
        pytest.raises(MasterKeyError, match="key file"),
    ):
        cm.check_master_key()


def test_missing_or_damaged_key_file_is_a_clear_error(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.create_worker_key()
        key_file = key_file_path(cm.state_path)
    saved = key_file.read_bytes()
    key_file.unlink()
    with ConfigManager.open(config_file) as cm:
        with pytest.raises(MasterKeyError, match="missing"):
            cm.get_ml_node_key_config()
        with pytest.raises(MasterKeyError, match="missing"):
            cm.create_worker_key()  # never silently re-keys the file
    assert not key_file.exists()
    key_file.write_text("not base64 at all\n")
    with ConfigManager.open(config_file) as cm, pytest.raises(MasterKeyError, match="not a"):
        cm.check_master_key()
    key_file.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")  # another machine's key
    with ConfigManager.open(config_file) as cm, pytest.raises(MasterKeyError, match="not open"):
        cm.check_master_key()
    key_file.write_bytes(saved)
    key_file.chmod(0o644)
    with ConfigManager.open(config_file) as cm:
        assert cm.get_ml_node_key_config().worker_private
    assert key_file.stat().st_mode & 0o777 == 0o600  # tightened on use


@pytest.mark.sqlite_only
def test_check_reports_a_readable_key_file(manager: ConfigManager) -> None:
    manager.create_worker_key()
    key_file = key_file_path(manager.state_path)
    assert not [p for p in manager.check().problems if str(key_file) in p]
    key_file.chmod(0o644)
    result = manager.check()
    assert result.items["permissions"][key_file.name] == "0644"
    assert any(str(key_file) in p and "chmod 600" in p for p in result.problems)


def test_sealed_values_are_bound_to_their_record(tmp_path: Path) -> None:
    box = SecretBox(os.urandom(32), "test")
    sealed = box.seal("secret value", "mlnode_security:n1:1")
    assert box.open(sealed, "mlnode_security:n1:1") == "secret value"
    with pytest.raises(MasterKeyError):
        box.open(sealed, "mlnode_security:n2:1")  # copied onto another node's row
    raw = bytearray(base64.urlsafe_b64decode(sealed[3:]))
    raw[-1] ^= 1
    with pytest.raises(MasterKeyError):
        box.open("v1." + base64.urlsafe_b64encode(bytes(raw)).decode(), "mlnode_security:n1:1")
    with pytest.raises(MasterKeyError):
        box.open("plaintext", "x")
    with pytest.raises(MasterKeyError):
        SecretBox(os.urandom(32), "other").open(sealed, "mlnode_security:n1:1")


_CONCURRENT = """
import sys
from dapi_config import ConfigManager

with ConfigManager.open(sys.argv[1]) as cm:
    for _ in range(3):
        cm.create_worker_key()
    print(cm.get_ml_node_key_config().worker_private)
"""


def test_concurrent_first_secrets_agree_on_one_master_key(config_file: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, str(config_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with ConfigManager.open(config_file) as cm:
        cm.check_master_key()
        assert cm.get_ml_node_key_config().worker_private
    assert [p.name for p in config_file.parent.glob("*.key*")] == ["state.db.key"]


def test_master_key_source_never_shows_the_passphrase(tmp_path: Path) -> None:
    source = MasterKeySource(tmp_path / "s.db", PASSPHRASE)
    assert PASSPHRASE not in repr(source)
    box, params = source.box(None)
    assert params is not None
    assert PASSPHRASE not in repr(box) + params.to_json()


# --- secrets never reach files, logs or messages ----------------------------------------------


def _needles(secrets: list[str]) -> list[bytes]:
    """Each secret as text, plus the raw bytes it encodes (a binary store would hold those)."""
    out: list[bytes] = []
    for secret in secrets:
        out.append(secret.encode())
        padded = secret + "=" * (-len(secret) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            with contextlib.suppress(ValueError):
                out.append(decode(padded)[:24])
    return out


def _assert_absent(data: bytes, secrets: list[str], where: str) -> None:
    for needle in _needles(secrets):
        assert needle not in data, f"a secret appears in {where}"


@pytest.fixture
def scenario(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[tuple[Path, list[str]]]:
    """A full run with every kind of secret; yields (state path, the plaintext secrets)."""
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    with ConfigManager.open(config_file) as cm:
        cm.add_nodes([node(f"n{i}") for i in range(5)])
        for i in range(5):
            secrets.append(cm.create_security_key(f"n{i}").security_key)
        secrets.append(cm.rotate_security_key("n0").security_key)
        cm.create_worker_key()
        secrets.append(cm.get_ml_node_key_config().worker_private)
        cm.set_height(100)
        cm.remove_node("n4")
        cm.set_nodes([node("n0"), node("n1")])
        yield cm.state_path, secrets


def test_state_file_and_wal_never_hold_a_plaintext_secret(
    scenario: tuple[Path, list[str]],
) -> None:
    state, secrets = scenario
    wal = Path(f"{state}-wal")
    assert wal.exists() and wal.stat().st_size > 0  # the manager is open: data sits in the WAL
    _assert_absent(state.read_bytes(), secrets, "the state file")
    _assert_absent(wal.read_bytes(), secrets, "the -wal file")


def test_backups_never_hold_a_plaintext_secret(scenario: tuple[Path, list[str]]) -> None:
    state, secrets = scenario
    with ConfigManager.open(state.parent / "config.yaml") as cm:
        info = cm.backup()
    assert Path(info.path).stat().st_mode & 0o777 == 0o600
    _assert_absent(Path(info.path).read_bytes(), secrets, "a backup")


def test_exports_redact_secrets_unless_asked(scenario: tuple[Path, list[str]]) -> None:
    state, secrets = scenario
    config = state.parent / "config.yaml"
    out = state.parent / "export.yaml"
    result = run_cli("--config", str(config), "export", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    _assert_absent(out.read_bytes(), secrets, "an export")
    with ConfigManager.open(config) as cm:
        redacted = cm.export_full_config()
        assert set(redacted["mlnode_security"]) == {"n0", "n1"}
        assert redacted["mlnode_security"]["n0"] == {"key_version": 2, "security_key": REDACTED}
        _assert_absent(render_legacy_yaml(redacted).encode(), secrets, "an export")
        full = render_legacy_yaml(cm.export_full_config(include_secrets=True))
    # Positive control: asked for, the secrets that still exist are there (so the search works).
    assert secrets[5] in full and secrets[1] in full and secrets[-1] in full
    assert secrets[0] not in full  # rotated away


def test_logs_of_a_full_scenario_hold_no_secret(
    scenario: tuple[Path, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    _state, secrets = scenario
    records = caplog.get_records("setup") + caplog.get_records("call")
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records)
    assert "state change" in text and "generated the master key file" in text
    _assert_absent(text.encode(), secrets, "the log")


def test_status_output_holds_no_secret(scenario: tuple[Path, list[str]]) -> None:
    state, secrets = scenario
    for args in (("status", "--json"), ("status",), ("audit", "--json"), ("keys", "list")):
        result = run_cli("--config", str(state.parent / "config.yaml"), *args)
        assert result.returncode == 0, result.stderr
        _assert_absent((result.stdout + result.stderr).encode(), secrets, " ".join(args))


def test_bad_secret_values_are_not_echoed_in_errors(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("api:\n  admin_token: [hunter2-secret-token]\n")
    config.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        ConfigManager.open(config)
    assert "admin_token" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    result = run_cli("--config", str(config), "status", env={"KEYRING_PASSWORD": "x"})
    assert result.returncode == 1
    assert "hunter2" not in result.stderr


def test_config_readable_by_others_warns_once_when_it_holds_a_secret(tmp_path: Path) -> None:
    """Seen on main: the shipped example (no secret, mode 644 in a git checkout) warned on
    every command. Now only a readable file that holds a secret does."""
    config = tmp_path / "config.yaml"
    config.write_text(EXAMPLE_CONFIG)
    config.chmod(0o644)
    ConfigManager.open(config).close()
    quiet = run_cli("--config", str(config), "status", "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert "readable by group/others" not in quiet.stderr
    config.write_text(EXAMPLE_CONFIG.replace("api:\n", "api:\n  admin_token: s3cret-token\n", 1))
    result = run_cli("--config", str(config), "status", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("readable by group/others") == 1
    assert "api.admin_token" in result.stderr and "s3cret-token" not in result.stderr
    json.loads(result.stdout)  # the warning went to stderr only
