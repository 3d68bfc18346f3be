"""Static YAML loading: env overrides, precedence, and one clear message per bad file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dapi_config import ConfigError, ConfigManager
from dapi_config.settings import Settings
from dapi_config.static import load_static_config
from tests.conftest import permissions_enforced_prefix, run_cli


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_file_values_and_defaults(config_file: Path) -> None:
    cfg = load_static_config(config_file, env={}).config
    assert cfg.api.port == 8080
    assert cfg.api.admin_server_port == 9200
    assert cfg.api.ml_grpc_server_port == 9300, "unset keys get the predecessor's defaults"
    assert cfg.chain_node.keyring_password is None


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    cfg = load_static_config(write(tmp_path, ""), env={}).config
    assert cfg.api.admin_server_port == 9200
    assert cfg.nats.port == 4222


def test_dapi_env_overrides(config_file: Path) -> None:
    env = {
        "DAPI_API__PORT": "9000",
        "DAPI_API__TEST_MODE": "true",
        "DAPI_NATS__HOST": "nats.internal",
        "DAPI_CHAIN_NODE__URL": "http://chain:26657",
    }
    cfg = load_static_config(config_file, env=env).config
    assert cfg.api.port == 9000
    assert cfg.api.test_mode is True
    assert cfg.nats.host == "nats.internal"
    assert cfg.chain_node.url == "http://chain:26657"


def test_legacy_env_names_and_precedence(config_file: Path) -> None:
    env = {
        "KEY_NAME": "from-key-name",
        "ACCOUNT_PUBKEY": "pubkey",
        "KEYRING_BACKEND": "file",
        "KEYRING_PASSWORD": "hunter2-hunter2",
    }
    cfg = load_static_config(config_file, env=env).config.chain_node
    assert cfg.signer_key_name == "from-key-name"
    assert cfg.account_public_key == "pubkey"
    assert cfg.keyring_backend == "file"
    assert cfg.keyring_password is not None
    assert cfg.keyring_password.get_secret_value() == "hunter2-hunter2"
    # The specific DAPI_ variable wins over the predecessor's name; both win over the file.
    env["DAPI_CHAIN_NODE__SIGNER_KEY_NAME"] = "from-dapi"
    assert load_static_config(config_file, env=env).config.chain_node.signer_key_name == (
        "from-dapi"
    )


def test_keyring_password_never_dumped(config_file: Path) -> None:
    cfg = load_static_config(config_file, env={"KEYRING_PASSWORD": "s3cret-pass"}).config
    assert "s3cret-pass" not in repr(cfg)
    assert "keyring_password" not in cfg.chain_node.model_dump()


def test_legacy_keyring_password_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "chain_node:\n  KeyringPassword: old-pass\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_static_config(path, env={}).config.chain_node
    assert cfg.keyring_password is not None
    assert cfg.keyring_password.get_secret_value() == "old-pass"
    assert "KeyringPassword" in caplog.text
    assert "old-pass" not in caplog.text
    cfg = load_static_config(path, env={"KEYRING_PASSWORD": "env-pass"}).config.chain_node
    assert cfg.keyring_password is not None
    assert cfg.keyring_password.get_secret_value() == "env-pass"


def test_yaml_1_2_keeps_yes_as_string(tmp_path: Path) -> None:
    path = write(tmp_path, "nats:\n  host: yes\nchain_node:\n  keyring_backend: on\n")
    cfg = load_static_config(path, env={}).config
    assert cfg.nats.host == "yes"
    assert cfg.chain_node.keyring_backend == "on"


def test_unknown_keys_kept_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "api:\n  port: 1234\n  future_knob: 7\ntelemetry:\n  on: true\n")
    with caplog.at_level(logging.WARNING):
        loaded = load_static_config(path, env={})
        load_static_config(path, env={})
    assert loaded.config.api.model_extra == {"future_knob": 7}
    assert loaded.unknown_keys == ["telemetry"]
    assert caplog.text.count("future_knob") == 1
    assert caplog.text.count("telemetry") == 1


def test_paths_resolution(tmp_path: Path) -> None:
    assert Settings.from_env({}).config_file(None) == Path("config.yaml")
    from_env = Settings.from_env({"API_CONFIG_PATH": "/x/c.yaml"})
    assert from_env.config_file(None) == Path("/x/c.yaml")
    assert from_env.config_file("a.yaml") == Path("a.yaml")
    cfg = tmp_path / "c.yaml"
    assert Settings.from_env({}).state_file(None, cfg) == tmp_path / "state.db"
    state_env = Settings.from_env({"API_STATE_DB_PATH": "/s.db"})
    assert state_env.state_file(None, cfg) == Path("/s.db")
    assert state_env.state_file("o.db", cfg) == Path("o.db")


def test_config_path_from_env_in_manager(config_file: Path, tmp_path: Path) -> None:
    with ConfigManager.open(env={"API_CONFIG_PATH": str(config_file)}) as cm:
        assert cm.config_path == config_file
        assert cm.state_path == tmp_path / "state.db"


BAD_FILES = [
    ("not YAML", "api: [unclosed\n", ["not valid YAML", "line"]),
    ("duplicate keys", "api:\n  port: 1\n  port: 2\n", ["duplicate key", "port", "line"]),
    ("duplicate sections", "nats: {}\nnats: {}\n", ["duplicate key", "nats"]),
    ("wrong type", "api:\n  port: eighty\n", ["api.port", "eighty"]),
    ("port too high", "api:\n  admin_server_port: 70000\n", ["api.admin_server_port", "65535"]),
    # 0 is "not set" (the predecessor's reading: tests/legacy/test_as_deployed.py); below is not.
    ("port negative", "nats:\n  port: -1\n", ["nats.port", "greater than or equal to 1"]),
    ("bad url", "chain_node:\n  url: not a url\n", ["chain_node.url", "URL"]),
    ("bad bool", "api:\n  test_mode: sometimes\n", ["api.test_mode", "sometimes"]),
    ("section not a map", "api: 5\n", ["api", "expected a mapping"]),
    ("top level list", "- a\n- b\n", ["top level", "mapping"]),
    ("binary", "\xff\xfe\x00garbage", ["UTF-8"]),
]


@pytest.mark.parametrize(("case", "text", "needles"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_give_one_clear_message(
    tmp_path: Path, case: str, text: str, needles: list[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        ConfigManager.open(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert not (tmp_path / "state.db").exists(), "a bad config creates nothing"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_static_config(tmp_path / "nope.yaml", env={})


def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "api: {}\n")
    path.chmod(0)
    result = run_cli("--config", str(path), "status", prefix=permissions_enforced_prefix())
    assert result.returncode == 1
    assert "permission denied" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state.db").exists()


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_static_config(tmp_path, env={})


def test_bad_env_value_names_the_variable(config_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_static_config(config_file, env={"DAPI_API__PORT": "abc"})
    assert "DAPI_API__PORT" in str(info.value)
    assert "api.port" in str(info.value)
    with pytest.raises(ConfigError, match="DAPI_NATS__PORT"):
        load_static_config(config_file, env={"DAPI_NATS__PORT": "99999"})


def test_unknown_env_is_warned_not_fatal(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        load_static_config(config_file, env={"DAPI_NOSUCH__THING": "1", "DAPI_FLAT": "x"})
    assert "DAPI_NOSUCH__THING" in caplog.text
    assert "DAPI_FLAT" in caplog.text


def test_group_readable_config_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "api: {}\n", name="open.yaml")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_static_config(path, env={})
    assert "readable by group/others" not in caplog.text  # it holds no secret
    for secret in (
        "ml_node_key_config:\n  worker_private: abc\n",
        "chain_node:\n  KeyringPassword: pw\n",
        "api:\n  admin_token: tok\n",
    ):
        path = write(tmp_path, secret, name=f"s{len(secret)}.yaml")
        path.chmod(0o644)
        with caplog.at_level(logging.WARNING):
            load_static_config(path, env={})
        assert f"mode 644) and holds {secret.split(':')[0]}." in caplog.text


# --- the admin token (hardening) ------------------------------------------------------------

TOKEN_FILE = "api:\n  admin_token: s3cret-token-from-the-file\n"


def test_an_empty_token_variable_does_not_cancel_the_files_token(tmp_path: Path) -> None:
    """Seen on main: DAPI_API__ADMIN_TOKEN= opened the admin API although the file set one."""
    path = write(tmp_path, TOKEN_FILE)
    with pytest.raises(ConfigError, match="DAPI_API__ADMIN_TOKEN is set but empty"):
        load_static_config(path, env={"DAPI_API__ADMIN_TOKEN": ""})
    result = run_cli("--config", str(path), "status", env={"DAPI_API__ADMIN_TOKEN": ""})
    assert result.returncode == 1 and "set but empty" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "state.db").exists()


def test_an_empty_token_variable_without_a_file_token_means_no_token(tmp_path: Path) -> None:
    cfg = load_static_config(write(tmp_path, "api:\n  port: 8080\n"), {"DAPI_API__ADMIN_TOKEN": ""})
    assert cfg.config.api.admin_token is None


@pytest.mark.parametrize("token", ["'   '", "' padded'", "'padded\t'"])
def test_a_token_no_request_can_match_is_refused(tmp_path: Path, token: str) -> None:
    """Seen on main: a whitespace-only token locked everyone out, silently."""
    path = write(tmp_path, f"api:\n  admin_token: {token}\n")
    with pytest.raises(ConfigError, match=r"api\.admin_token: .*whitespace"):
        load_static_config(path, env={})
    with pytest.raises(ConfigError, match="DAPI_API__ADMIN_TOKEN"):
        load_static_config(write(tmp_path, "", "empty.yaml"), {"DAPI_API__ADMIN_TOKEN": "  "})


def test_an_unknown_variable_is_blamed_on_the_variable(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen on main: DAPI_API__BOGUS was reported as "config.yaml: unknown key api.bogus"."""
    with caplog.at_level(logging.WARNING):
        load_static_config(config_file, env={"DAPI_API__BOGUS": "1"})
    assert "DAPI_API__BOGUS sets api.bogus" in caplog.text
    assert f"{config_file}: unknown key api.bogus" not in caplog.text
