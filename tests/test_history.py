"""The audit trail's hash chain and ``check --deep`` (SPEC §10): every write chained to the one
before, and the state compared with the newest value its trail holds for each part. Seen on
main before: a node's ``host`` rewritten inside a database page that stays structurally valid
was served by the API, passed ``check`` and survived a restart.

The tamper tests change the state past the library (the stdlib on a SQLite file, psycopg on
PostgreSQL), then open a new manager, as an operator's next ``check`` would."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dapi_config import ConfigManager, InferenceNodeConfig, SeedInfo, UpgradePlan
from dapi_config.errors import HistoryUnavailableError
from dapi_config.history import Known, TrailRow, differences, newest_values
from dapi_config.store.chain import KEYED, PLAIN
from tests.conftest import TEST_STATE_KEY, raw_execute, raw_rows, sqlite_file

pytestmark = pytest.mark.both_backends


def _node(node_id: str, host: str = "10.0.0.5", **changes: object) -> InferenceNodeConfig:
    data: dict[str, object] = {
        "id": node_id,
        "host": host,
        "inference_port": 5000,
        "poc_port": 8080,
        "models": {"m": {"args": ["--tp", "2"]}},
    }
    data.update(changes)
    return InferenceNodeConfig.model_validate(data)


def _every_kind_of_write(cm: ConfigManager) -> None:
    cm.add_node(_node("a"))
    cm.add_nodes([_node("b", "10.0.0.6"), _node("c", "10.0.0.7")])
    cm.update_node(_node("b", "10.0.0.60"))
    cm.set_node_enabled("c", False)
    cm.add_node_version(100, "v2")
    cm.add_node_version(500, "v3")
    cm.set_height(150)  # v2 fires, v3 stays scheduled
    cm.set_upcoming_seed(SeedInfo(seed=7, epoch_index=1, signature="ab"))
    cm.rotate_seeds()
    cm.set_upgrade_plan(UpgradePlan(name="v3", height=500))
    cm.set_validation_params({"timestamp_expiration": 60})  # type: ignore[arg-type]
    cm.create_security_key("a")
    cm.rotate_security_key("a")
    cm.create_security_key("b")
    cm.delete_security_key("b")
    cm.remove_node("c")


@contextlib.contextmanager
def _reopened(config_file: Path, state_env: dict[str, str]) -> Iterator[ConfigManager]:
    cm = ConfigManager.open(config_file, env=state_env)
    try:
        yield cm
    finally:
        cm.close()


def test_every_kind_of_write_keeps_the_chain_and_the_state_in_step(
    manager: ConfigManager, config_file: Path, state_env: dict[str, str]
) -> None:
    _every_kind_of_write(manager)
    manager.backup()
    backup = manager.backup()
    manager.set_nodes([_node("z")])  # then undone by the restore
    manager.restore_backup(backup.path)
    manager.set_height(600)  # v3 fires after the restore
    found = manager.deep_check()
    assert found.ok, found.problems
    latest = manager.get_audit(limit=1, newest=True)[0].revision
    assert found.chain.rows == found.chain.last == latest
    assert found.parts_checked >= 10
    # Keyed from the first row on PostgreSQL (API_STATE_KEY); on SQLite once the key file
    # exists (made by the first sealed key).
    chains = [str(r[0]) for r in raw_rows(manager, "SELECT chain FROM audit_log ORDER BY revision")]
    assert chains[-1].startswith(KEYED)
    assert all(c.startswith((KEYED, PLAIN)) for c in chains)
    with _reopened(config_file, state_env) as again:
        assert again.deep_check().ok


def test_a_host_rewritten_under_the_trail_is_found(
    manager: ConfigManager, config_file: Path, state_env: dict[str, str]
) -> None:
    _every_kind_of_write(manager)
    raw_execute(manager, "UPDATE inference_nodes SET host = '203.0.113.66' WHERE id = 'b'")
    with _reopened(config_file, state_env) as cm:
        assert cm.get_node("b").host == "203.0.113.66"  # served as it is: only the check knows
        found = cm.deep_check()
    assert found.chain.ok  # the trail itself is intact
    assert [d.part for d in found.differences] == ["node:b"]
    (problem,) = found.problems
    assert "host '10.0.0.60' in the trail, '203.0.113.66' now" in problem
    assert f"r{found.differences[0].revision}" in problem


def test_values_changed_or_added_under_the_trail_are_found(
    manager: ConfigManager, config_file: Path, state_env: dict[str, str]
) -> None:
    _every_kind_of_write(manager)
    raw_execute(manager, "UPDATE chain_state SET value = '9999' WHERE key = 'current_height'")
    raw_execute(manager, "DELETE FROM node_versions")
    raw_execute(
        manager,
        "INSERT INTO inference_nodes(id, host, inference_segment, inference_port, poc_segment, "
        "poc_port, models, max_concurrent, hardware, version, is_enabled, position) "
        "VALUES ('ghost', '10.9.9.9', '', 1, '', 2, '{}', 0, '[]', '', TRUE, 99)",
    )
    with _reopened(config_file, state_env) as cm:
        parts = {d.part: d.message for d in cm.deep_check().differences}
    assert set(parts) == {"chain:current_height", "schedule", "node:ghost"}
    assert parts["node:ghost"] == "exists, but the trail never added it"
    assert "150 in the trail, '9999' now" in parts["chain:current_height"]


def test_a_key_swapped_under_the_trail_is_found(
    manager: ConfigManager, config_file: Path, state_env: dict[str, str]
) -> None:
    _every_kind_of_write(manager)
    manager.create_security_key("b")
    # Node b's sealed key replaced by a's (a valid ciphertext, for another node): the version
    # matches the trail, the key does not.
    raw_execute(
        manager,
        "UPDATE mlnode_security SET security_key = (SELECT security_key FROM mlnode_security "
        "WHERE node_id = 'a') WHERE node_id = 'b'",
    )
    with _reopened(config_file, state_env) as cm:
        found = cm.deep_check()
    assert [d.part for d in found.differences] == ["key:b"]
    assert "cannot be opened under the master key" in found.problems[0]


def test_an_edited_row_breaks_the_chain_at_that_row(
    manager: ConfigManager, config_file: Path, state_env: dict[str, str]
) -> None:
    _every_kind_of_write(manager)
    raw_execute(manager, "UPDATE audit_log SET actor = 'someone-else' WHERE revision = 4")
    with _reopened(config_file, state_env) as cm:
        found = cm.deep_check()
    assert not found.ok and found.chain.problem_revision == 4
    assert "the row was edited" in found.problems[0]


def test_a_deleted_row_breaks_the_chain_at_the_next(
    manager: ConfigManager, config_file: Path, state_env: dict[str, str]
) -> None:
    _every_kind_of_write(manager)
    raw_execute(manager, "DELETE FROM audit_log WHERE revision = 6")
    with _reopened(config_file, state_env) as cm:
        found = cm.deep_check()
    assert found.chain.problem_revision == 7
    assert "a row between r5 and it was deleted" in found.problems[0]


def test_retention_keeps_the_chain_checkable_from_its_cut(
    config_file: Path, state_env: dict[str, str]
) -> None:
    env = {**state_env, "API_AUDIT_KEEP": "10"}
    with ConfigManager.open(config_file, env=env) as cm:
        for height in range(1, 40):
            cm.set_height(height)
        assert cm.prune_audit() > 0
        cm.set_height(40)  # chained after the cut
        first = raw_rows(cm, "SELECT MIN(revision) FROM audit_log")[0][0]
        assert int(str(first)) > 1
        found = cm.deep_check()
    assert found.ok, found.problems
    assert found.chain.first == first


@pytest.mark.sqlite_only
def test_rows_written_without_the_master_key_after_keyed_ones_are_reported(
    config_file: Path,
) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.add_node(_node("a"))
        cm.create_security_key("a")  # makes the key file: rows from here on are signed
        cm.set_height(1)
        key_file = Path(f"{cm.state_path}.key")
    hidden = key_file.with_name("hidden.key")
    key_file.rename(hidden)
    try:  # a command run without the key: its row is chained, not signed
        with ConfigManager.open(config_file) as cm:
            cm.set_height(2)
    finally:
        hidden.rename(key_file)
    with ConfigManager.open(config_file) as cm:
        found = cm.deep_check()
    assert not found.ok
    assert "written without the master key" in found.problems[0]


@pytest.mark.sqlite_only
def test_a_trail_from_before_the_chain_is_chained_by_the_schema_step(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        _every_kind_of_write(cm)
        state = cm.state_path
    # The state as schema step 3 left it: no chain column, no checkpoint table.
    with sqlite_file(state) as conn:
        conn.execute("ALTER TABLE audit_log DROP COLUMN chain")
        conn.execute("DROP TABLE audit_checkpoint")
        conn.execute("DELETE FROM schema_migrations WHERE version = 4")
        conn.execute("PRAGMA user_version = 3")
    with ConfigManager.open(config_file) as cm:
        found = cm.deep_check()
        chains = [str(r[0]) for r in raw_rows(cm, "SELECT chain FROM audit_log")]
    assert found.ok, found.problems
    assert chains and all(c.startswith(PLAIN) for c in chains)
    assert "plain SHA-256" in found.chain.describe()


@pytest.mark.sqlite_only
def test_check_deep_through_the_command_line(config_file: Path) -> None:
    from tests.conftest import run_cli

    with ConfigManager.open(config_file) as cm:
        _every_kind_of_write(cm)
        cm.backup()
        state = cm.state_path
    clean = run_cli("--config", str(config_file), "check", "--deep")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "audit_chain: audit chain verified:" in clean.stdout
    with sqlite_file(state) as conn:
        conn.execute("UPDATE inference_nodes SET host = '203.0.113.66' WHERE id = 'a'")
    found = run_cli("--config", str(config_file), "check", "--deep")
    assert found.returncode == 1
    assert "PROBLEM: state differs from its audit trail: node:a:" in found.stdout
    assert "Traceback" not in found.stderr
    assert run_cli("--config", str(config_file), "check").returncode == 0  # only --deep sees it


# --- reading the trail, row by row ---------------------------------------------------------


def test_a_restore_of_another_states_backup_starts_the_trail_over() -> None:
    rows = [
        TrailRow(1, "add_node", "a", None, {"id": "a", "host": "h"}, "s1:1"),
        TrailRow(2, "restore", "state", {"revision": 1},
                 {"backup_revision": 1, "backup_chain": "s1:foreign", "undone": None}, "s1:2"),
    ]  # fmt: skip
    known = newest_values(rows, whole=True)
    assert "node:a" not in known  # before the foreign restore: not known any more
    assert differences(known, {"node:x": {"id": "x"}}) == []
    assert differences({"node:a": Known({"host": "h"}, 1)}, {"node:a": {"host": "h"}}) == []


# --- reading the past and point-in-time recovery ----------------------------------------------


def _state_of(cm: ConfigManager, revision: int | None = None) -> dict[str, object]:
    """Everything a read shows: the state document (but its revision) and the nodes."""
    summary = cm.state_summary() if revision is None else cm.state_summary_at(revision)
    nodes = cm.get_nodes() if revision is None else cm.nodes_at(revision)
    summary.pop("revision")
    return {"state": summary, "nodes": [n.model_dump(mode="json") for n in nodes]}


def _workload(cm: ConfigManager, ops: list[str], states: dict[int, dict[str, object]]) -> None:
    """Run ``ops`` on ``cm``, recording the whole state after each revision."""
    backups: list[Path] = []
    states[cm.latest_revision()] = _state_of(cm)
    for i, op in enumerate(ops):
        ids = [n.id for n in cm.get_nodes()]
        if op == "add" or (not ids and op in ("update", "disable", "remove")):
            cm.add_node(_node(f"n{i}"))
        elif op == "update":
            cm.update_node(_node(ids[0], f"10.1.0.{i}"))
        elif op == "disable":
            cm.set_node_enabled(ids[-1], False)
        elif op == "remove":
            cm.remove_node(ids[0])
        elif op == "replace":
            cm.set_nodes([_node(f"r{i}"), *(cm.get_nodes()[:1])])
        elif op == "height":
            cm.set_height(cm.get_height() + 10)
        elif op == "schedule":
            cm.add_node_version(cm.get_height() + 5, f"v{i}")
        elif op == "plan":
            cm.set_upgrade_plan(UpgradePlan(name=f"p{i}", height=i))
        elif op == "seed":
            cm.set_upcoming_seed(SeedInfo(seed=i, epoch_index=i))
            cm.rotate_seeds()
        elif op == "params":
            cm.set_validation_params({"timestamp_expiration": i})  # type: ignore[arg-type]
        elif op == "backup":
            backups.append(cm.backup().path)
        elif op == "restore" and backups:
            cm.restore_backup(backups[i % len(backups)])
        elif op == "rewind" and len(states) > 1:
            cm.restore_to_revision(sorted(states)[i % len(states)])
        states[cm.latest_revision()] = _state_of(cm)


_ALL_OPS = st.lists(
    st.sampled_from(
        [
            *("add", "update", "disable", "remove", "replace", "height", "schedule"),
            *("plan", "seed", "params", "backup", "restore", "rewind"),
        ]
    ),
    min_size=1,
    max_size=20,
)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=_ALL_OPS, data=st.data())
def test_any_revision_reads_and_restores_as_it_was(
    tmp_path_factory: pytest.TempPathFactory,
    state_backend: str,
    request: pytest.FixtureRequest,
    ops: list[str],
    data: st.DataObject,
) -> None:
    root = tmp_path_factory.mktemp("pitr")
    config = root / "config.yaml"
    config.write_text((Path(__file__).parent.parent / "examples" / "config.yaml").read_text())
    env: dict[str, str] = {}
    if state_backend == "postgres":
        server = request.getfixturevalue("pg_server")
        env = {"API_STATE_URL": server.fresh_database(), "API_STATE_KEY": TEST_STATE_KEY}
    states: dict[int, dict[str, object]] = {}
    with ConfigManager.open(config, env=env) as cm:
        _workload(cm, ops, states)
        found = cm.deep_check()  # the workload left the state as its trail says
        assert found.ok, (ops, found.problems)
        for revision in data.draw(st.lists(st.sampled_from(sorted(states)), max_size=3)):
            assert _state_of(cm, revision) == states[revision], (ops, revision)
        target = data.draw(st.sampled_from(sorted(states)))
        before = cm.latest_revision()
        restored = cm.restore_to_revision(target)
        assert restored == before + 1  # revisions keep increasing
        assert _state_of(cm) == states[target], (ops, target)
        entry = cm.get_audit(since=before, limit=1)[0]
        assert (entry.action, entry.new_value["backup"]) == ("restore", f"revision {target}")
        found = cm.deep_check()
        assert found.ok, (ops, found.problems)


def test_a_cut_trail_rebuilds_from_a_backup_or_says_why_not(
    config_file: Path, state_env: dict[str, str]
) -> None:
    env = {**state_env, "API_AUDIT_KEEP": "5"}
    with ConfigManager.open(config_file, env=env) as cm:
        cm.add_node(_node("a"))
        for height in range(1, 12):
            cm.set_height(height)
        early = cm.latest_revision() - 8
        backup = cm.backup()
        cm.set_height(50)
        assert cm.prune_audit() > 0
        with pytest.raises(HistoryUnavailableError, match="needs a verified backup"):
            cm.state_summary_at(early)
        assert cm.state_summary_at(backup.revision)["height"] == 11  # from the backup
        assert cm.state_summary_at(cm.latest_revision())["height"] == 50
        with pytest.raises(HistoryUnavailableError):
            cm.restore_to_revision(early)
        assert cm.get_height() == 50  # nothing changed


@pytest.mark.sqlite_only
def test_restore_to_a_revision_through_the_command_line(config_file: Path) -> None:
    from tests.conftest import run_cli

    with ConfigManager.open(config_file) as cm:
        cm.add_node(_node("a"))
        cm.set_height(10)
        then = cm.latest_revision()
        cm.add_node(_node("b"))
        cm.set_height(20)
    base = ("--config", str(config_file))
    got = run_cli(*base, "state", "get", "height", "--at-revision", str(then), "-o", "json")
    assert got.returncode == 0 and '"height": 10' in got.stdout
    listed = run_cli(*base, "nodes", "list", "--at-revision", str(then), "-o", "json")
    assert [n["id"] for n in json.loads(listed.stdout)] == ["a"]
    preview = run_cli(*base, "restore", "--to-revision", str(then), "--dry-run")
    assert preview.returncode == 0 and "node b: removed" in preview.stdout
    done = run_cli(
        *base, "restore", "--to-revision", str(then)
    )  # stdin is no terminal: no question
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"state brought back to revision {then} (as revision ")
    for bad, says in (
        (("restore", "--to-revision", "999"), "revision 999 does not exist yet"),
        (("restore", "--to-time", "yesterday"), "--to-time: expected an ISO 8601 time"),
        (("restore", "--to-time", "2026-01-01T00:00:00"), "has no time zone"),
        (("restore",), "give one of BACKUP, --to-revision R or --to-time"),
        (("state", "get", "--at-revision", "999"), "revision 999 does not exist yet"),
    ):
        result = run_cli(*base, *bad)
        assert result.returncode == 1 and says in result.stderr, (bad, result.stderr)
        assert "Traceback" not in result.stderr
