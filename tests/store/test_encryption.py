"""Whole-file encryption (SQLCipher): opening, wrong keys, backups, encrypt/rekey/decrypt."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.errors import (
    ConfigError,
    DuplicateNodeError,
    StateCorruptError,
    StateUnavailableError,
)
from dapi_config.models import (
    BandwidthParamsCache,
    SeedInfo,
    UpgradePlan,
    ValidationParamsCache,
)
from dapi_config.store import encrypt_file, sqlcipher
from dapi_config.store.backup import backup_dir_for, inspect_backup, list_backups
from dapi_config.store.sqlcipher import StateCipher
from tests.conftest import sqlite_file

pytest.importorskip(
    "sqlcipher3", reason="the encryption extra is not installed (pip install '.[encryption]')"
)

MAGIC = b"SQLite format 3\x00"
KEY = "correct horse battery staple"
OTHER_KEY = "a completely different secret"
ENC_ENV = {"API_STATE_ENCRYPTION": "sqlcipher", "API_STATE_KEY": KEY}
HOST = "gpu-host-unique-marker.example"


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(
        id=node_id, host=HOST, inference_port=5000, poc_port=8080, max_concurrent=4
    )


def populate(cm: ConfigManager) -> None:
    """Every kind of state: heights, schedule, seeds, params, plan, nodes (and audit rows)."""
    cm.add_node_version(150, "v0.2.0")
    cm.set_height(100)
    cm.set_height(200)  # fires the schedule
    cm.set_upcoming_seed(SeedInfo(seed=42, epoch_index=7, signature="ab12", claimed=False))
    cm.rotate_seeds()
    cm.set_upcoming_seed(SeedInfo(seed=-9, epoch_index=8, signature="cd34", claimed=True))
    cm.set_validation_params(
        ValidationParamsCache(timestamp_expiration=10, timestamp_advance=20, expiration_blocks=3)
    )
    cm.set_bandwidth_params(
        BandwidthParamsCache(
            estimated_limits_per_block_kb=1024, kb_per_input_token=0.5, kb_per_output_token=1.5
        )
    )
    cm.set_upgrade_plan(
        UpgradePlan(name="up1", height=500, binaries={"linux/amd64": "https://x/y"})
    )
    for i in range(5):
        cm.add_node(node(f"n{i}"))
    cm.remove_node("n3")


def everything(cm: ConfigManager) -> dict[str, Any]:
    """Every value a caller can read, audit rows included."""
    return {
        "summary": cm.state_summary(),
        "nodes": [n.model_dump() for n in cm.get_nodes()],
        "seeds": [
            cm.get_previous_seed().model_dump(),
            cm.get_current_seed().model_dump(),
            cm.get_upcoming_seed().model_dump(),
        ],
        "audit": cm.backend.audit_entries(0, 10_000),
    }


def open_encrypted(config_file: Path, key: str = KEY) -> ConfigManager:
    return ConfigManager.open(
        config_file, env={"API_STATE_ENCRYPTION": "sqlcipher", "API_STATE_KEY": key}
    )


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- opening -----------------------------------------------------------------------------


def test_encrypted_state_has_no_sqlite_header_and_no_plaintext(config_file: Path) -> None:
    with open_encrypted(config_file) as cm:
        populate(cm)
        state = cm.state_path
        expected = everything(cm)
        wal = Path(f"{state}-wal")
        assert HOST.encode() not in wal.read_bytes()  # the WAL is encrypted too
    data = file_bytes(state)
    assert not data.startswith(MAGIC)
    assert HOST.encode() not in data and b"v0.2.0" not in data
    assert mode(state) == 0o600
    assert sqlcipher.marker_path(state).exists() and mode(sqlcipher.marker_path(state)) == 0o600
    with open_encrypted(config_file) as cm:
        assert everything(cm) == expected


def test_wrong_key_is_a_clear_error_and_changes_nothing(config_file: Path) -> None:
    with open_encrypted(config_file) as cm:
        populate(cm)
        cm.backup()
        state = cm.state_path
    before = file_bytes(state)
    with pytest.raises(StateUnavailableError) as err:
        open_encrypted(config_file, OTHER_KEY)
    assert "not the key the file was encrypted with" in str(err.value)
    assert KEY not in str(err.value) and OTHER_KEY not in str(err.value)
    assert file_bytes(state) == before
    # A key problem is never taken for damage: nothing was restored or moved aside.
    assert not (state.parent / "quarantine").exists()


def test_plain_open_of_encrypted_file_says_how_to_enable(config_file: Path) -> None:
    with open_encrypted(config_file) as cm:
        populate(cm)
        state = cm.state_path
    before = file_bytes(state)
    with pytest.raises(StateUnavailableError) as err:
        ConfigManager.open(config_file, env={})
    assert "encrypted but state-file encryption is not enabled" in str(err.value)
    assert "API_STATE_ENCRYPTION=sqlcipher" in str(err.value)
    assert file_bytes(state) == before
    # Without the marker the file cannot be told from garbage; the message still points at
    # encryption and, with no plain backup to restore, nothing changes.
    sqlcipher.marker_path(state).unlink()
    with pytest.raises(StateCorruptError) as corrupt:
        ConfigManager.open(config_file, env={})
    assert "API_STATE_ENCRYPTION=sqlcipher" in str(corrupt.value)
    assert file_bytes(state) == before


def test_plain_file_with_encryption_on_is_refused(config_file: Path) -> None:
    with ConfigManager.open(config_file, env={}) as cm:
        cm.set_height(5)
        state = cm.state_path
    before = file_bytes(state)
    with pytest.raises(StateUnavailableError) as err:
        open_encrypted(config_file)
    assert "plain (unencrypted)" in str(err.value) and "dapi-config encrypt" in str(err.value)
    assert file_bytes(state) == before


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"API_STATE_ENCRYPTION": "sqlcipher"}, "needs API_STATE_KEY"),
        ({"API_STATE_ENCRYPTION": "sqlcipher", "API_STATE_KEY": "short-secret"}, "16"),
        ({"API_STATE_ENCRYPTION": "aes", "API_STATE_KEY": KEY}, "expected 'sqlcipher'"),
    ],
)
def test_bad_encryption_settings_are_config_errors(
    config_file: Path, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        ConfigManager.open(config_file, env=env)
    assert expected in str(err.value)
    assert "short-secret" not in str(err.value) and KEY not in str(err.value)
    assert (
        not (config_file.parent / "state.db").exists()
        or (config_file.parent / "state.db").stat().st_size == 0
    )


def test_cipher_repr_hides_the_key() -> None:
    key = StateCipher.from_secret(KEY)
    assert key.raw_key.hex() not in repr(key) and KEY not in repr(key)
    assert key == StateCipher.from_secret(KEY) and key != StateCipher.from_secret(OTHER_KEY)


def test_store_maps_driver_errors(config_file: Path) -> None:
    """The driver's exception classes differ from sqlite3's; the store maps both."""
    with open_encrypted(config_file) as cm:
        cm.add_node(node("a"))
        with pytest.raises(DuplicateNodeError):
            cm.add_node(node("a"))
        with pytest.raises(DuplicateNodeError), cm.transaction():
            cm.add_node(node("b"))
            cm.add_node(node("b"))
        assert [n.id for n in cm.get_nodes()] == ["a"]
        assert cm.backend.audit_entries(0, 100)[-1].target == "a"


# --- backups while encrypted ---------------------------------------------------------------


def test_backups_are_encrypted_and_restorable(config_file: Path) -> None:
    with open_encrypted(config_file) as cm:
        populate(cm)
        expected = everything(cm)
        info = cm.backup()
        assert info.ok
        cm.set_height(999)
        assert not file_bytes(info.path).startswith(MAGIC)
        assert HOST.encode() not in file_bytes(info.path)
        assert mode(info.path) == 0o600
        latest = cm.latest_revision()
        cm.restore_backup(info.path)
        assert cm.get_height() == 200
        after = everything(cm)
    # The same state; the trail kept growing (the restore is one more revision).
    assert after["summary"] == {**expected["summary"], "revision": latest + 1}
    assert after["audit"][: len(expected["audit"])] == expected["audit"]
    # Read in plain mode the encrypted backup is unusable, never mistaken for a good one.
    plain = inspect_backup(info.path, cipher=None)
    assert not plain.ok and "encrypted" in (plain.problem or "")


def test_damaged_encrypted_file_is_recovered_from_encrypted_backup(config_file: Path) -> None:
    with open_encrypted(config_file) as cm:
        populate(cm)
        with cm.transaction():
            for i in range(300):
                cm.add_node(node(f"bulk{i}"))
        cm.backup()
        state = cm.state_path
    size = state.stat().st_size
    assert size > 8 * 4096
    with open(state, "r+b") as handle:  # zero pages past page 1: damage, not a key problem
        handle.seek(4 * 4096)
        handle.write(bytes(4 * 4096))
    with open_encrypted(config_file) as cm:
        assert cm.get_height() == 200
        assert len(cm.get_nodes()) == 304
    assert (state.parent / "quarantine").exists()


# --- encrypt / rekey / decrypt ---------------------------------------------------------------


def test_encrypt_rekey_decrypt_keeps_every_value(config_file: Path) -> None:
    with ConfigManager.open(config_file, env={}) as cm:
        populate(cm)
        expected = everything(cm)
        state = cm.state_path
    backups = backup_dir_for(state)
    marker = sqlcipher.marker_path(state)

    done = encrypt_file.encrypt_state(state, KEY)
    assert done.backup.path.exists() and file_bytes(done.backup.path).startswith(MAGIC)
    assert done.revision == expected["audit"][-1].revision
    data = file_bytes(state)
    assert not data.startswith(MAGIC) and HOST.encode() not in data
    assert marker.exists()
    for path in (state, done.backup.path, *backups.iterdir()):
        assert mode(path) == 0o600, path
    assert not Path(f"{state}-wal").exists() and not Path(f"{state}-shm").exists()
    with open_encrypted(config_file) as cm:
        assert everything(cm) == expected

    rekeyed = encrypt_file.rekey_state(state, KEY, OTHER_KEY)
    assert rekeyed.rows == done.rows
    with pytest.raises(StateUnavailableError):
        open_encrypted(config_file, KEY)
    with open_encrypted(config_file, OTHER_KEY) as cm:
        assert everything(cm) == expected

    encrypt_file.decrypt_state(state, OTHER_KEY)
    assert file_bytes(state).startswith(MAGIC) and not marker.exists()
    assert mode(state) == 0o600
    with sqlite_file(state) as conn:  # a plain file for the stdlib / sqlite3 shell again
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ConfigManager.open(config_file, env={}) as cm:
        assert everything(cm) == expected
        cm.set_height(300)  # and writable
    reasons = sorted(b.reason for b in list_backups(backups, state, verify=False))
    assert reasons == [
        "post-decrypt",
        "post-encrypt",
        "post-rekey",
        "pre-decrypt",
        "pre-encrypt",
        "pre-rekey",
    ]


def test_a_plain_backup_is_never_restored_over_an_encrypted_file(config_file: Path) -> None:
    """After `encrypt`, a start without encryption must not 'recover' the old plain backup."""
    with ConfigManager.open(config_file, env={}) as cm:
        populate(cm)
        cm.backup()
        state = cm.state_path
    encrypt_file.encrypt_state(state, KEY)
    before = file_bytes(state)
    with pytest.raises(StateUnavailableError, match="not enabled"):
        ConfigManager.open(config_file, env={})
    assert file_bytes(state) == before
    assert not (state.parent / "quarantine").exists()


def test_conversions_refuse_the_wrong_mode_and_key(config_file: Path) -> None:
    with ConfigManager.open(config_file, env={}) as cm:
        cm.set_height(7)
        state = cm.state_path
    key = KEY
    with pytest.raises(StateUnavailableError, match="not encrypted"):
        encrypt_file.decrypt_state(state, key)
    with pytest.raises(StateUnavailableError, match="not encrypted"):
        encrypt_file.rekey_state(state, key, OTHER_KEY)
    encrypt_file.encrypt_state(state, key)
    before = file_bytes(state)
    backups_before = sorted(backup_dir_for(state).iterdir())
    with pytest.raises(StateUnavailableError, match="already encrypted"):
        encrypt_file.encrypt_state(state, key)
    with pytest.raises(StateUnavailableError, match="not the key"):
        encrypt_file.decrypt_state(state, OTHER_KEY)
    with pytest.raises(StateUnavailableError, match="same as the current"):
        encrypt_file.rekey_state(state, key, key)
    assert file_bytes(state) == before
    assert sorted(backup_dir_for(state).iterdir()) == backups_before
    with pytest.raises(StateUnavailableError, match="no state file"):
        encrypt_file.encrypt_state(state.with_name("missing.db"), key)


def test_conversion_refuses_while_another_process_has_the_file_open(
    config_file: Path,
) -> None:
    with ConfigManager.open(config_file, env={}) as cm:
        cm.set_height(11)
        state = cm.state_path
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dapi_config import ConfigManager\n"
            f"cm = ConfigManager.open({str(config_file)!r}, env={{}})\n"
            "cm.set_height(12); print('ready', flush=True); sys.stdin.readline(); cm.close()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("API_")},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StateUnavailableError, match="another process has it open"):
            encrypt_file.encrypt_state(state, KEY)
        assert file_bytes(state).startswith(MAGIC)
        assert not sqlcipher.marker_path(state).exists()
        assert not any("pre-encrypt" in p.name for p in backup_dir_for(state).glob("*"))
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
        assert holder.stdout is not None
        holder.stdout.close()
    # Once the other process is gone the same conversion goes through.
    encrypt_file.encrypt_state(state, KEY)
    with open_encrypted(config_file) as cm:
        assert cm.get_height() == 12


# --- the per-secret master key (also from API_STATE_KEY) survives the conversions -------------


def sealed_secrets(cm: ConfigManager) -> tuple[str, str]:
    """A worker key pair and a node security key, sealed under the master key; returns
    (worker private key, node security key)."""
    cm.add_node(node("keyed"))
    cm.create_worker_key()
    issued = cm.create_security_key("keyed")
    return cm.get_ml_node_key_config().worker_private, issued.security_key


def assert_secrets(cm: ConfigManager, private: str, security_key: str) -> None:
    cm.check_master_key()
    assert cm.get_ml_node_key_config().worker_private == private
    assert cm.verify_security_key("keyed", security_key)


def test_encrypt_reseals_secrets_sealed_under_the_key_file(config_file: Path) -> None:
    """No API_STATE_KEY before: secrets were sealed under <state>.key. After `encrypt` the
    service runs with API_STATE_KEY, so they must open with it."""
    with ConfigManager.open(config_file, env={}) as cm:
        private, security_key = sealed_secrets(cm)
        state = cm.state_path
    assert Path(f"{state}.key").exists()
    encrypt_file.encrypt_state(state, KEY)
    with open_encrypted(config_file) as cm:
        assert_secrets(cm, private, security_key)
        cm.rotate_security_key("keyed")  # and new secrets are sealed fine
    assert private.encode() not in file_bytes(state)


def test_encrypt_refuses_when_the_sealed_secrets_cannot_be_opened(config_file: Path) -> None:
    with ConfigManager.open(config_file, env={}) as cm:
        private, security_key = sealed_secrets(cm)
        state = cm.state_path
        expected = everything(cm)
    Path(f"{state}.key").rename(tmp := state.with_name("elsewhere.key"))
    with pytest.raises(ConfigError, match="key file"):
        encrypt_file.encrypt_state(state, KEY)
    tmp.rename(f"{state}.key")
    # Still the plain file with the same data (only its journal mode was switched).
    assert file_bytes(state).startswith(MAGIC)
    assert not sqlcipher.marker_path(state).exists()
    assert not list(state.parent.glob(".state.db.*.tmp"))
    with ConfigManager.open(config_file, env={}) as cm:
        assert everything(cm) == expected
        assert_secrets(cm, private, security_key)


def test_rekey_and_decrypt_keep_secrets_readable(config_file: Path) -> None:
    with open_encrypted(config_file) as cm:
        private, security_key = sealed_secrets(cm)
        state = cm.state_path
    encrypt_file.rekey_state(state, KEY, OTHER_KEY)
    with open_encrypted(config_file, OTHER_KEY) as cm:
        assert_secrets(cm, private, security_key)
    encrypt_file.decrypt_state(state, OTHER_KEY)
    # Plain file now; API_STATE_KEY stays the master key of the sealed secrets.
    with ConfigManager.open(config_file, env={"API_STATE_KEY": OTHER_KEY}) as cm:
        assert_secrets(cm, private, security_key)
    assert private.encode() not in file_bytes(state)  # still sealed inside the plain file


def test_two_processes_write_one_encrypted_file(config_file: Path) -> None:
    """WAL, locks and the hot cache work across processes on an encrypted file too."""
    with open_encrypted(config_file) as cm:
        cm.set_height(0)
        state = cm.state_path
    rounds = 30
    env = {k: v for k, v in os.environ.items() if not k.startswith("API_")} | ENC_ENV
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.store._writer",
                "contend",
                str(config_file),
                tag,
                str(rounds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for tag in ("a", "b")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    with open_encrypted(config_file) as cm:
        assert cm.get_height() == 2 * rounds
        assert len(cm.get_nodes()) == 2 * rounds
        assert cm.check().items["integrity"] == "ok"
    assert not file_bytes(state).startswith(MAGIC)
