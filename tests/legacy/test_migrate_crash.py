"""A legacy migration interrupted at every step (real processes killed with SIGKILL, injected
I/O failures) finishes on the next open, without loss and without a second import."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dapi_config import ConfigError, ConfigManager
from dapi_config.legacy import migrate as legacy_migrate
from tests.conftest import run_cli, sqlite_file
from tests.legacy.test_migrate import GO_WRITER, backups, dynamic_view, plain_load, write

# Runs the three steps by hand and kills itself with SIGKILL at the named point.
STEPS_SCRIPT = r"""
import os, signal, sys
from pathlib import Path
from dapi_config import legacy
from dapi_config._yaml import load_document
from dapi_config.store import SqliteStore

config, point = Path(sys.argv[1]), sys.argv[2]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

raw = config.read_bytes()
document = load_document(raw, str(config))
keys = legacy.dynamic_keys_in(document.data)
state = legacy.parse_legacy_state(document.data, str(config))
store = SqliteStore.open(config.parent / "state.db")
backup = legacy.write_backup(config, raw)
if point == "after_backup":
    die()
if point == "inside_import":
    real = store.set_upgrade_plan
    def set_and_die(plan):
        real(plan)
        die()
    store.set_upgrade_plan = set_and_die
legacy.import_state(
    store, state, source=str(config.resolve()), checksum=legacy.checksum_of(raw),
    backup=backup, keys=keys,
)
if point == "after_import":
    die()
text = legacy.static_text(document, set(keys))
if point == "inside_rewrite":
    os.replace = lambda *a, **k: die()
legacy.rewrite_static(config, raw, text)
if point == "after_rewrite":
    die()
"""


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The state an uninterrupted migration of GO_WRITER produces."""
    config = write(tmp_path_factory.mktemp("reference"), GO_WRITER)
    with ConfigManager.open(config) as cm:
        return dynamic_view(cm)


def legacy_import_count(state: Path) -> int:
    with sqlite_file(state) as conn:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM legacy_imports WHERE kind = 'legacy_yaml'"
            ).fetchone()[0]
        )


def run_script(config: Path, point: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", STEPS_SCRIPT, str(config), point],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "point", ["after_backup", "inside_import", "after_import", "inside_rewrite", "after_rewrite"]
)
def test_killed_at_each_step_then_next_open_finishes(
    tmp_path: Path, point: str, expected: dict[str, Any]
) -> None:
    config = write(tmp_path, GO_WRITER)
    raw = config.read_bytes()
    proc = run_script(config, point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = tmp_path / "state.db"
    imported_before = legacy_import_count(state)
    assert imported_before == (
        1 if point in ("after_import", "inside_rewrite", "after_rewrite") else 0
    )

    with ConfigManager.open(config) as cm:
        assert dynamic_view(cm) == expected
        report = cm.legacy_report
    if point == "after_rewrite":
        assert report is None  # nothing left to do
    else:
        assert report is not None
        assert report.action == ("resumed" if imported_before else "migrated")
    assert legacy_import_count(state) == 1
    assert set(plain_load(config)) == {"api", "chain_node", "ml_node_key_config", "nats"}
    (backup,) = backups(config)  # the interrupted run's backup was reused
    assert backup.read_bytes() == raw
    # And a further open changes nothing.
    mtime = config.stat().st_mtime_ns
    with ConfigManager.open(config) as cm:
        assert dynamic_view(cm) == expected
    assert config.stat().st_mtime_ns == mtime
    assert legacy_import_count(state) == 1


def test_killed_at_random_moments(tmp_path: Path, expected: dict[str, Any]) -> None:
    """Kill a real `dapi-config status` run mid-migration at spread-out moments."""
    _kill_rounds(tmp_path, expected, (0.05, 0.2, 0.35, 0.5))


@pytest.mark.stress
def test_killed_at_random_moments_campaign(tmp_path: Path, expected: dict[str, Any]) -> None:
    """The long version: 60 kills spread over the whole start-up and migration."""
    rng = random.Random(20261127)
    _kill_rounds(tmp_path, expected, [rng.uniform(0.0, 1.2) for _ in range(60)])


def _kill_rounds(tmp_path: Path, expected: dict[str, Any], delays: Sequence[float]) -> None:
    for attempt, delay in enumerate(delays):
        workdir = tmp_path / f"run{attempt}"
        workdir.mkdir()
        config = write(workdir, GO_WRITER)
        proc = subprocess.Popen(
            [sys.executable, "-m", "dapi_config", "--config", str(config), "migrate", "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        with ConfigManager.open(config) as cm:
            assert dynamic_view(cm) == expected
        assert legacy_import_count(workdir / "state.db") == 1
        assert set(plain_load(config)) == {"api", "chain_node", "ml_node_key_config", "nats"}


def test_injected_rewrite_failure_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expected: dict[str, Any]
) -> None:
    config = write(tmp_path, GO_WRITER)
    real_write = legacy_migrate.atomic_write

    def full_disk_for_config(path: Any, data: Any, **kwargs: Any) -> None:
        if Path(path) == config:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data, **kwargs)

    monkeypatch.setattr(legacy_migrate, "atomic_write", full_disk_for_config)
    with pytest.raises(ConfigError, match="next start finishes the job"):
        ConfigManager.open(config)
    assert config.read_text() == GO_WRITER
    monkeypatch.undo()
    with ConfigManager.open(config) as cm:
        assert cm.legacy_report is not None and cm.legacy_report.action == "resumed"
        assert dynamic_view(cm) == expected
    assert legacy_import_count(tmp_path / "state.db") == 1


def test_injected_backup_failure_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, GO_WRITER)

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(legacy_migrate, "atomic_write", full_disk)
    with pytest.raises(ConfigError, match="pre-migration backup"):
        ConfigManager.open(config)
    monkeypatch.undo()
    assert config.read_text() == GO_WRITER
    assert backups(config) == []
    assert legacy_import_count(tmp_path / "state.db") == 0


def test_dynamic_keys_added_after_the_import_need_force(tmp_path: Path) -> None:
    """Once the state took a legacy import, dynamic keys that reappear are backed up and
    stripped, not imported; ``migrate --force`` imports them on purpose."""
    config = write(tmp_path, GO_WRITER)
    with ConfigManager.open(config):
        pass
    config.write_text(config.read_text() + "current_height: 200000\n")
    with ConfigManager.open(config) as cm:
        assert cm.legacy_report is not None and cm.legacy_report.action == "ignored"
        assert cm.legacy_report.not_imported == ["current_height"]
        assert cm.get_height() == 183467
    assert "current_height" not in config.read_text()
    assert legacy_import_count(tmp_path / "state.db") == 1
    newest = backups(config)[-1]
    assert len(backups(config)) == 2 and "current_height: 200000" in newest.read_text()
    config.write_bytes(newest.read_bytes())
    with ConfigManager.open(config, migrate_legacy=False) as cm:
        report = cm.migrate_legacy(force=True)
        assert report.action == "migrated"
        assert cm.get_height() == 200000
        assert cm.get_nodes()  # keys absent from the second file were left alone
        # Before the re-import; after each migration, the migrated state's own backup.
        reasons = sorted(b.reason for b in cm.list_backups())
        assert reasons == ["post-migration", "post-migration", "pre-legacy-reimport"]
    assert legacy_import_count(tmp_path / "state.db") == 2


def test_two_processes_migrating_at_once(tmp_path: Path, expected: dict[str, Any]) -> None:
    config = write(tmp_path, GO_WRITER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dapi_config", "--config", str(config), "migrate", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert legacy_import_count(tmp_path / "state.db") == 1
    with ConfigManager.open(config) as cm:
        assert dynamic_view(cm) == expected
    raw = GO_WRITER.encode()
    assert all(b.read_bytes() == raw for b in backups(config))


def test_state_backup_before_a_migration_over_existing_state(tmp_path: Path) -> None:
    """A legacy file showing up again (e.g. after running the old binary on a rollback) is
    imported over live state with ``migrate --force``: the state file is backed up first."""
    config = write(tmp_path, GO_WRITER)
    with ConfigManager.open(config) as cm:
        cm.set_height(183500)
        out = cm.write_rollback(tmp_path / "rollback.yaml")
    config.write_bytes(out.read_bytes().replace(b"current_height: 183500", b"current_height: 9"))
    with ConfigManager.open(config, migrate_legacy=False) as cm:
        report = cm.migrate_legacy(force=True)
        assert cm.get_height() == 9
        (info,) = [b for b in cm.list_backups() if b.reason == "pre-legacy-reimport"]
        assert report.state_backup is not None and "post-migration" in report.state_backup
        assert info.revision < cm.latest_revision()  # taken before the re-import
    assert len(backups(config)) == 2


# v0.2.0's init-docker.sh copied the image's seed config over the live config at every start
# (gonka PR #306): the same static sections, an empty registry, zeros, different bytes.
SEED_CONFIG = """\
api:
    port: 8080
chain_node:
    url: http://node:26657
current_height: 0
merged_node_config: false
nodes: null
"""


def test_recopied_seed_config_does_not_empty_the_registry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reproduction: the re-copied seed file was taken for a new legacy file, ``nodes: null``
    imported as an empty list, and the registry went from three nodes to none."""
    config = write(tmp_path, GO_WRITER)
    with ConfigManager.open(config) as cm:
        before = dynamic_view(cm)
        assert len(cm.get_nodes()) == 3
    for _ in range(2):  # every container start copies it again
        config.write_text(SEED_CONFIG)
        with ConfigManager.open(config) as cm:
            assert dynamic_view(cm) == before
        assert "nodes" not in config.read_text() and "current_height" not in config.read_text()
    warnings = [r.getMessage() for r in caplog.records if "were NOT imported" in r.getMessage()]
    assert len(warnings) == 2
    assert "current_height, nodes" in warnings[0] and "migrate --force" in warnings[0]
    assert legacy_import_count(tmp_path / "state.db") == 1


def test_empty_values_never_replace_non_empty_ones_without_force(tmp_path: Path) -> None:
    """Even on a first import: a ``nodes: null`` does not wipe nodes the state already has."""
    config = tmp_path / "config.yaml"
    config.write_text("api:\n    port: 8080\n")
    with ConfigManager.open(config) as cm:
        cm.add_node({"id": "n1", "host": "h", "inference_port": 1, "poc_port": 2})  # type: ignore[arg-type]
    config.write_text("api:\n    port: 8080\ncurrent_height: 42\nnodes: null\n")
    with ConfigManager.open(config) as cm:
        assert cm.legacy_report is not None and cm.legacy_report.not_imported == ["nodes"]
        assert [n.id for n in cm.get_nodes()] == ["n1"]
        assert cm.get_height() == 42


def test_migrate_force_cli_reimports_after_a_state_backup(tmp_path: Path) -> None:
    config = write(tmp_path, GO_WRITER)
    with ConfigManager.open(config):
        pass
    config.write_text(SEED_CONFIG)
    result = run_cli("--config", str(config), "migrate", "--force", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["action"] == "migrated"
    with ConfigManager.open(config) as cm:
        assert cm.get_nodes() == [] and cm.get_height() == 0  # --force imports empty values too
        reasons = sorted(b.reason for b in cm.list_backups())
        assert reasons == ["post-migration", "post-migration", "pre-legacy-reimport"]
