"""The full-config export: interval parsing, atomic 0600 files, redaction, copies, the thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dapi_config import ConfigError, ConfigManager, InferenceNodeConfig
from dapi_config._yaml import parse_yaml, to_plain
from dapi_config.crypto import REDACTED
from dapi_config.export import (
    EXPORT_FILENAME,
    ExportSettings,
    PeriodicExporter,
    export_once,
    render_legacy_yaml,
)
from dapi_config.settings import Settings, parse_duration
from tests.conftest import run_cli

pytestmark = pytest.mark.both_backends


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("600", 600.0),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1.5m", 90.0),
        ("250ms", 0.25),
        (" 45 ", 45.0),
        ("10M", 600.0),
        ("0", 0.0),
    ],
)
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


def parse_interval(text: str) -> float:
    return parse_duration(text, "CONFIG_EXPORT_INTERVAL", allow_zero=True)


@pytest.mark.parametrize("text", ["", "often", "10x", "-5", "m", "10 minutes", "1e3", "9999h"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_interval(text)
    assert str(err.value).startswith("CONFIG_EXPORT_INTERVAL: ")


def export_settings(env: dict[str, str]) -> ExportSettings:
    return ExportSettings.from_settings(Settings.from_env(env))


def test_settings_from_env() -> None:
    assert export_settings({}) == ExportSettings(600.0, 0, False)
    settings = export_settings(
        {
            "CONFIG_EXPORT_INTERVAL": "30s",
            "CONFIG_EXPORT_KEEP": "3",
            "CONFIG_EXPORT_SECRETS": "true",
        }
    )
    assert settings == ExportSettings(30.0, 3, True)
    for env, var in (
        ({"CONFIG_EXPORT_KEEP": "-1"}, "CONFIG_EXPORT_KEEP"),
        ({"CONFIG_EXPORT_KEEP": "many"}, "CONFIG_EXPORT_KEEP"),
        ({"CONFIG_EXPORT_SECRETS": "maybe"}, "CONFIG_EXPORT_SECRETS"),
    ):
        with pytest.raises(ConfigError, match=f"^{var}: "):
            export_settings(env)


def _add_nodes(cm: ConfigManager, count: int) -> None:
    cm.add_nodes(
        [
            InferenceNodeConfig(
                id=f"n{i}",
                host=f"10.0.{i // 250}.{i % 250}",
                inference_port=5000,
                poc_port=8080,
                models={"Qwen/Qwen2.5-7B-Instruct": {"args": ["--tp", "2", "--max", str(i)]}},
            )
            for i in range(count)
        ]
    )


def test_export_once_is_0600_redacted_and_complete(manager: ConfigManager) -> None:
    manager.create_worker_key()
    _add_nodes(manager, 3)
    written = export_once(manager)
    assert written == manager.config_path.parent / EXPORT_FILENAME
    assert written.stat().st_mode & 0o777 == 0o600
    text = written.read_text()
    secret = manager.get_ml_node_key_config().worker_private
    assert secret not in text
    data = to_plain(parse_yaml(text, "export"))
    assert data == manager.export_full_config()
    assert data["ml_node_key_config"]["worker_private"] == REDACTED
    assert [n["id"] for n in data["nodes"]] == ["n0", "n1", "n2"]

    with_secrets = export_once(manager, manager.config_path.parent / "x.yaml", include_secrets=True)
    assert secret in with_secrets.read_text()
    assert with_secrets.stat().st_mode & 0o777 == 0o600


def test_export_keeps_timestamped_copies(manager: ConfigManager, tmp_path: Path) -> None:
    for _ in range(5):
        export_once(manager, keep=3)
    copies = sorted(tmp_path.glob("api-config-full.*Z.yaml"))
    assert len(copies) == 3
    assert all(c.stat().st_mode & 0o777 == 0o600 for c in copies)
    assert copies[-1].read_text() == (tmp_path / EXPORT_FILENAME).read_text()


def test_reader_never_sees_a_partial_file(manager: ConfigManager) -> None:
    _add_nodes(manager, 100)  # ~25 KiB, several pages: a torn write would be visible
    target = manager.config_path.parent / EXPORT_FILENAME
    exports: list[float] = []
    exporter = manager.start_periodic_export(0.001, on_export=exports.append)
    problems: list[str] = []
    reads = 0
    stop = threading.Event()

    def writer() -> None:
        # Keep the content changing so successive exports differ.
        height = 0
        while not stop.is_set():
            height += 1
            manager.set_height(height)

    change = threading.Thread(target=writer)
    change.start()
    try:
        while len(exports) < 20 or reads < 100:
            try:
                text = target.read_text()
            except FileNotFoundError:
                continue  # before the first export only
            reads += 1
            complete = (
                text.startswith("# Full dapi-config export")
                and text.count("inference_port:") == 100
                and text.endswith("\n")
            )
            if not complete:
                problems.append(text[-200:])
            if reads % 25 == 0:  # a full parse is slow; the cheap check above runs every time
                data = to_plain(parse_yaml(text, "export"))
                if len(data["nodes"]) != 100 or "bandwidth_params" not in data:
                    problems.append("parsed incomplete")
            if target.stat().st_mode & 0o777 != 0o600:
                problems.append("mode")
    finally:
        stop.set()
        change.join()
        manager.stop_periodic_export()
    assert problems == []
    assert not exporter.running
    assert reads >= 100


def test_periodic_export_uses_env_and_stops_on_close(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFIG_EXPORT_SECRETS", "true")
    monkeypatch.setenv("CONFIG_EXPORT_INTERVAL", "1h")
    cm = ConfigManager.open(config_file)
    cm.create_worker_key()
    done = threading.Event()
    exporter = cm.start_periodic_export(on_export=lambda _t: done.set())
    assert exporter.settings == ExportSettings(3600.0, 0, True)
    assert done.wait(30)
    text = (config_file.parent / EXPORT_FILENAME).read_text()
    assert cm.get_ml_node_key_config().worker_private in text
    cm.close()
    assert not exporter.running
    cm.stop_periodic_export()  # idempotent


def test_bad_interval_argument(manager: ConfigManager) -> None:
    with pytest.raises(ConfigError, match=r"^interval: "):
        manager.start_periodic_export("soon")
    with pytest.raises(ConfigError):
        manager.start_periodic_export(0)


def test_failed_export_is_logged_and_retried(
    manager: ConfigManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "missing-dir" / "export.yaml"
    exporter = PeriodicExporter(manager, ExportSettings(interval=0.01), path=target)
    assert exporter.export_now() is None
    assert exporter.last_error is not None
    assert "export to" in caplog.text
    target.parent.mkdir()
    assert exporter.export_now() == target
    assert exporter.last_error is None
    assert exporter.last_export is not None


def test_render_has_header_and_legacy_keys(manager: ConfigManager) -> None:
    text = render_legacy_yaml(manager.export_full_config())
    assert text.startswith("# Full dapi-config export")
    for key in ("api:", "nodes:", "current_height:", "node_versions:", "chain_node:"):
        assert f"\n{key}" in text


def test_cli_export(config_file: Path, tmp_path: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.create_worker_key()
        secret = cm.get_ml_node_key_config().worker_private
    out = tmp_path / "full.yaml"
    result = run_cli("--config", str(config_file), "export", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"
    assert out.stat().st_mode & 0o777 == 0o600
    assert secret not in out.read_text()
    assert REDACTED in out.read_text()

    result = run_cli("--config", str(config_file), "export", "--include-secrets")
    assert result.returncode == 0, result.stderr
    default = config_file.parent / EXPORT_FILENAME
    assert result.stdout == f"{default}\n"
    assert secret in default.read_text()

    result = run_cli("--config", str(config_file), "export", "--out", "-")
    assert result.returncode == 0
    assert (
        to_plain(parse_yaml(result.stdout, "stdout"))["ml_node_key_config"]["worker_private"]
        == REDACTED
    )

    result = run_cli("--config", str(config_file), "export", "--out", str(tmp_path / "no" / "x"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
