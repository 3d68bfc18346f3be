"""``dapi-config encrypt / decrypt / rekey`` and encrypted start-up, as real subprocesses."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dapi_config import ConfigManager
from tests.conftest import _OUR_VARS, run_cli

pytest.importorskip(
    "sqlcipher3", reason="the encryption extra is not installed (pip install '.[encryption]')"
)

MAGIC = b"SQLite format 3\x00"
KEY = "operator-secret-0001"
NEW_KEY = "operator-secret-0002"
WRONG_KEY = "operator-secret-9999"


def seed_state(config_file: Path) -> Path:
    with ConfigManager.open(config_file, env={}) as cm:
        cm.add_node_version(50, "v9.9.9")
        cm.set_height(100)
        return cm.state_path


def no_secret(*outputs: str) -> None:
    for text in outputs:
        for secret in (KEY, NEW_KEY, WRONG_KEY):
            assert secret not in text


def test_encrypt_status_rekey_decrypt(config_file: Path) -> None:
    state = seed_state(config_file)
    cfg = ("--config", str(config_file))

    missing = run_cli(*cfg, "encrypt")
    assert missing.returncode == 1 and "API_STATE_KEY is not set" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert state.read_bytes().startswith(MAGIC)

    done = run_cli(*cfg, "encrypt", "--json", env={"API_STATE_KEY": KEY})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["operation"] == "encrypt" and result["encrypted"] is True
    assert result["backup"]["reason"] == "pre-encrypt" and result["after"]["ok"]
    assert "API_STATE_ENCRYPTION=sqlcipher" in done.stderr  # what to do next
    assert not state.read_bytes().startswith(MAGIC)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    no_secret(done.stdout, done.stderr)

    plain = run_cli(*cfg, "status")
    assert plain.returncode == 1
    assert "encrypted but state-file encryption is not enabled" in plain.stderr
    assert "Traceback" not in plain.stderr

    enc = {"API_STATE_ENCRYPTION": "sqlcipher"}
    wrong = run_cli(*cfg, "status", env={**enc, "API_STATE_KEY": WRONG_KEY})
    assert wrong.returncode == 1 and "not the key the file was encrypted with" in wrong.stderr
    assert "Traceback" not in wrong.stderr and "hmac" not in wrong.stderr.lower()
    no_secret(wrong.stdout, wrong.stderr)

    ok = run_cli(*cfg, "status", "--json", env={**enc, "API_STATE_KEY": KEY})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["height"] == 100

    check = run_cli(*cfg, "check", "--json", env={**enc, "API_STATE_KEY": KEY})
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["encryption"] == "sqlcipher"

    same = run_cli(*cfg, "rekey", env={"API_STATE_KEY": KEY, "API_STATE_NEW_KEY": KEY})
    assert same.returncode == 1 and "same as the current" in same.stderr
    no_new = run_cli(*cfg, "rekey", "--new-key-env", "MY_NEW_KEY", env={"API_STATE_KEY": KEY})
    assert no_new.returncode == 1 and "MY_NEW_KEY is not set" in no_new.stderr

    # The new key comes from stdin here: never from argv, where `ps` shows it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_VARS)}
    env["API_STATE_KEY"] = KEY
    rekeyed = subprocess.run(
        [sys.executable, "-m", "dapi_config", *cfg, "rekey", "--new-key-stdin"],
        input=NEW_KEY + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert "rekey:" in rekeyed.stdout
    no_secret(rekeyed.stdout, rekeyed.stderr)
    old = run_cli(*cfg, "status", env={**enc, "API_STATE_KEY": KEY})
    assert old.returncode == 1 and "not the key" in old.stderr

    wrong_decrypt = run_cli(*cfg, "decrypt", env={"API_STATE_KEY": KEY})
    assert wrong_decrypt.returncode == 1 and "not the key" in wrong_decrypt.stderr
    decrypted = run_cli(*cfg, "decrypt", env={"API_STATE_KEY": NEW_KEY})
    assert decrypted.returncode == 0, decrypted.stderr
    assert state.read_bytes().startswith(MAGIC)
    final = run_cli(*cfg, "status", "--json")
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["height"] == 100 and summary["current_node_version"] == "v9.9.9"


def test_bad_settings_exit_1_without_traceback(config_file: Path) -> None:
    seed_state(config_file)
    cfg = ("--config", str(config_file))
    short = run_cli(*cfg, "encrypt", env={"API_STATE_KEY": "short"})
    assert short.returncode == 1 and "at least 16 characters" in short.stderr
    unknown = run_cli(*cfg, "status", env={"API_STATE_ENCRYPTION": "rot13"})
    assert unknown.returncode == 1 and "API_STATE_ENCRYPTION" in unknown.stderr
    plain_file = run_cli(
        *cfg, "status", env={"API_STATE_ENCRYPTION": "sqlcipher", "API_STATE_KEY": KEY}
    )
    assert plain_file.returncode == 1 and "dapi-config encrypt" in plain_file.stderr
    nothing = run_cli(*cfg, "decrypt", env={"API_STATE_KEY": KEY})
    assert nothing.returncode == 1 and "not encrypted" in nothing.stderr
    for result in (short, unknown, plain_file, nothing):
        assert "Traceback" not in result.stderr
        no_secret(result.stderr)
