"""The audit trail: one row per write with the right actor, in the write's transaction; none for
a failed or no-op write; paging by revision; retention; secrets only as fingerprints."""

from __future__ import annotations

import inspect
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dapi_config import (
    BandwidthParamsCache,
    ConfigError,
    ConfigManager,
    DapiConfigError,
    InferenceNodeConfig,
    PoCModelParams,
    PoCParamsCache,
    SeedInfo,
    UpgradePlan,
    ValidationError,
    ValidationParamsCache,
)
from dapi_config.settings import DEFAULT_AUDIT_KEEP_ROWS, AuditRetention, parse_audit_keep
from dapi_config.store.sqlite import AUDIT_PRUNE_EVERY
from tests.conftest import run_cli

pytestmark = pytest.mark.both_backends


def node(node_id: str, **changes: Any) -> InferenceNodeConfig:
    data = {"id": node_id, "host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080}
    data.update(changes)
    return InferenceNodeConfig.model_validate(data)


def _prepare(cm: ConfigManager) -> None:
    """State every write below can act on."""
    cm.add_nodes([node("a"), node("b")])
    cm.create_security_key("b")
    cm.add_node_version(50, "v2")
    cm.create_token("old", "read")


#: Every public write of ConfigManager -> (call, expected action, expected target).
WRITES: dict[str, tuple[Callable[[ConfigManager], Any], str, str]] = {
    "set_height": (lambda cm: cm.set_height(10), "set_height", "current_height"),
    "set_height (schedule fires)": (lambda cm: cm.set_height(60), "set_height", "current_height"),
    "set_current_seed": (
        lambda cm: cm.set_current_seed(SeedInfo(seed=1)),
        "set_current_seed",
        "current_seed",
    ),
    "set_previous_seed": (
        lambda cm: cm.set_previous_seed(SeedInfo(seed=2)),
        "set_previous_seed",
        "previous_seed",
    ),
    "set_upcoming_seed": (
        lambda cm: cm.set_upcoming_seed(SeedInfo(seed=3)),
        "set_upcoming_seed",
        "upcoming_seed",
    ),
    "rotate_seeds": (lambda cm: cm.rotate_seeds(), "rotate_seeds", "seeds"),
    "set_validation_params": (
        lambda cm: cm.set_validation_params(ValidationParamsCache(expiration_blocks=5)),
        "set_validation_params",
        "validation",
    ),
    "set_bandwidth_params": (
        lambda cm: cm.set_bandwidth_params(BandwidthParamsCache(kb_per_input_token=0.5)),
        "set_bandwidth_params",
        "bandwidth",
    ),
    "set_poc_params": (
        lambda cm: cm.set_poc_params(PoCParamsCache(models=[PoCModelParams(model_id="m")])),
        "set_poc_params",
        "poc",
    ),
    "set_upgrade_plan": (
        lambda cm: cm.set_upgrade_plan(UpgradePlan(name="u", height=9)),
        "set_upgrade_plan",
        "upgrade_plan",
    ),
    "add_node_version": (lambda cm: cm.add_node_version(70, "v3"), "add_node_version", "70"),
    "remove_node_version": (
        lambda cm: cm.remove_node_version(50, "v2"),
        "set_node_versions",
        "node_versions",
    ),
    "clear_upgrade_plan": (lambda cm: cm.clear_upgrade_plan(), "set_upgrade_plan", "upgrade_plan"),
    "set_nodes": (lambda cm: cm.set_nodes([node("a"), node("c")]), "set_nodes", "nodes"),
    "add_node": (lambda cm: cm.add_node(node("c")), "add_node", "c"),
    "add_nodes": (lambda cm: cm.add_nodes([node("c"), node("d")]), "add_nodes", "nodes"),
    "update_node": (lambda cm: cm.update_node(node("a", host="h2")), "update_node", "a"),
    "put_node (new)": (lambda cm: cm.put_node(node("c")), "add_node", "c"),
    "put_node (existing)": (lambda cm: cm.put_node(node("a", host="h3")), "update_node", "a"),
    "remove_node": (lambda cm: cm.remove_node("a"), "remove_node", "a"),
    "remove_nodes": (lambda cm: cm.remove_nodes(["a"]), "remove_node", "a"),
    "set_node_enabled": (lambda cm: cm.set_node_enabled("a", False), "disable_node", "a"),
    "create_worker_key": (lambda cm: cm.create_worker_key(), "set_secret", "worker_key"),
    "create_security_key": (lambda cm: cm.create_security_key("a"), "create_security_key", "a"),
    "rotate_security_key": (lambda cm: cm.rotate_security_key("b"), "rotate_security_key", "b"),
    "delete_security_key": (lambda cm: cm.delete_security_key("b"), "delete_security_key", "b"),
    "create_token": (lambda cm: cm.create_token("new", "write"), "token_create", "token:new"),
    "revoke_token": (lambda cm: cm.revoke_token("old"), "token_revoke", "token:old"),
}

#: Public ConfigManager members that are not single-row state writes: reads, plumbing, files,
#: services, and the bulk import (tested on its own below).
NOT_WRITES = {
    "open", "close", "transaction", "snapshot", "acting_as", "config_path", "state_path",
    "settings", "on_commit", "observe_writes",
    "static_config", "state_summary", "export_full_config", "start_periodic_export",
    "stop_periodic_export", "check_master_key", "verify_security_key", "get_audit",
    "latest_revision", "prune_audit", "backup", "backup_before", "list_backups", "check",
    "deep_check",
    "wait_for_revision",
    "backup_dir", "restore_backup", "backend", "loaded_document", "state_mode", "state_location",
    "write_rollback", "roll_back", "before_risky_operation", "import_nodes_file", "migrate_legacy",
    "import_gonka_db",
    "export_tables", "seal_secrets", "sealed_keyring_password",
    "own_files", "output_path", "master_key_problem", "predecessor_values", "supports_backups",
    "run_imports", "state_value", "set_state_value", "clear_state_value", "patch_state",
    "check_state_patch", "admin_token", "list_tokens", "has_tokens", "find_nodes",
    "preview_restore", "preview_nodes_import",
    # The past, read; and restores to a revision (several rows, tested in tests/test_history.py).
    "state_summary_at", "state_value_at", "nodes_at", "revision_at_time",
    "preview_restore_to_revision", "restore_to_revision",
    # Records when a token was last used: bookkeeping, not a change (no audit row).
    "token_identity",
}  # fmt: skip


def test_every_public_write_is_listed_here() -> None:
    """A new write method must be added to WRITES (and so be checked for its audit row)."""
    public = {n for n, _ in inspect.getmembers(ConfigManager) if not n.startswith("_")}
    writes = {name.split(" ")[0] for name in WRITES}
    unknown = public - writes - NOT_WRITES - {n for n in public if n.startswith("get_")}
    assert not unknown, f"classify these ConfigManager members in tests/test_audit.py: {unknown}"


ACTORS = ("library", "cli", "api", "migration")


@pytest.mark.parametrize(
    ("name", "actor"), [(name, ACTORS[i % len(ACTORS)]) for i, name in enumerate(WRITES)]
)
def test_each_write_adds_exactly_one_row_with_its_actor(
    state_env: dict[str, str], config_file: Path, name: str, actor: str
) -> None:
    """Every actor is exercised on several writes: the default of open(actor=...) for library
    and cli, acting_as() for api and migration."""
    call, action, target = WRITES[name]
    with ConfigManager.open(
        config_file, env=state_env, actor="cli" if actor == "cli" else "library"
    ) as cm:
        _prepare(cm)
        before = cm.latest_revision()
        if actor in ("api", "migration"):
            with cm.acting_as(actor):
                call(cm)
        else:
            call(cm)
        rows = cm.get_audit(since=before)
    assert len(rows) == 1, [(r.action, r.target) for r in rows]
    (row,) = rows
    assert (row.revision, row.actor, row.action, row.target) == (before + 1, actor, action, target)


def test_node_file_import_records_the_nodes_and_the_import(
    manager: ConfigManager, tmp_path: Path
) -> None:
    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(json.dumps([node("x").model_dump(), node("y").model_dump()]))
    with manager.acting_as("migration"):
        manager.import_nodes_file(nodes_file)
    rows = manager.get_audit()
    assert [(r.actor, r.action) for r in rows] == [
        ("migration", "add_nodes"),
        ("migration", "import"),
    ]
    before = manager.latest_revision()
    with pytest.raises(DapiConfigError):
        manager.import_nodes_file(nodes_file)  # duplicates: nothing imported, nothing recorded
    assert manager.latest_revision() == before


def test_schedule_firing_is_recorded_in_the_height_row(manager: ConfigManager) -> None:
    manager.add_node_version(50, "v2")
    manager.add_node_version(60, "v3")
    manager.set_height(70)
    row = manager.get_audit(since=manager.latest_revision() - 1)[0]
    assert row.old_value == {
        "current_height": 0,
        "current_node_version": "",
        "node_versions": [{"height": 50, "version": "v2"}, {"height": 60, "version": "v3"}],
    }
    assert row.new_value == {
        "current_height": 70,
        "current_node_version": "v3",
        "node_versions": [],
    }


def _batch_then_fail(cm: ConfigManager) -> None:
    with cm.transaction():
        cm.set_height(99)
        cm.rotate_security_key("b")
        cm.add_node(node("a"))


FAILING: dict[str, Callable[[ConfigManager], Any]] = {
    "bad height": lambda cm: cm.set_height(-1),
    "bad seed": lambda cm: cm.set_current_seed({"seed": "x"}),  # type: ignore[arg-type]
    "duplicate node": lambda cm: cm.add_node(node("a")),
    "duplicate in batch": lambda cm: cm.add_nodes([node("x"), node("x")]),
    "unknown node update": lambda cm: cm.update_node(node("zz")),
    "unknown node remove": lambda cm: cm.remove_node("zz"),
    "unknown node enable": lambda cm: cm.set_node_enabled("zz", True),
    "key exists": lambda cm: cm.create_security_key("b"),
    "no key to rotate": lambda cm: cm.rotate_security_key("a"),
    "no key to delete": lambda cm: cm.delete_security_key("a"),
    "key for unknown node": lambda cm: cm.create_security_key("zz"),
    "batch fails at its end": _batch_then_fail,
}


@pytest.mark.parametrize("name", list(FAILING))
def test_a_failed_write_adds_no_row(manager: ConfigManager, name: str) -> None:
    _prepare(manager)
    before = manager.latest_revision()
    with pytest.raises(DapiConfigError):
        FAILING[name](manager)
    assert manager.latest_revision() == before
    assert manager.get_audit(since=before) == []


def test_a_no_op_write_adds_no_row(manager: ConfigManager) -> None:
    _prepare(manager)
    before = manager.latest_revision()
    assert manager.add_node_version(50, "v2") is False
    assert manager.latest_revision() == before


def test_revisions_strictly_increase_and_page_by_since(manager: ConfigManager) -> None:
    for height in range(1, 251):
        manager.set_height(height)
    seen: list[int] = []
    since = 0
    while page := manager.get_audit(since=since, limit=40):
        seen += [r.revision for r in page]
        since = page[-1].revision
    assert seen == list(range(1, 251))
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert [r.new_value for r in manager.get_audit(since=245)] == [246, 247, 248, 249, 250]
    assert manager.get_audit(since=250) == []
    for bad in ({"since": -1}, {"limit": 0}, {"limit": 1001}, {"since": "1"}, {"limit": True}):
        with pytest.raises(ValidationError):
            manager.get_audit(**bad)


def test_secrets_appear_only_as_fingerprints(manager: ConfigManager) -> None:
    manager.add_node(node("a"))
    issued = [manager.create_security_key("a"), manager.rotate_security_key("a")]
    manager.create_worker_key()
    manager.create_worker_key()
    private = manager.get_ml_node_key_config().worker_private
    rows = json.dumps([r.__dict__ for r in manager.get_audit(limit=1000)])
    for secret in (*(i.security_key for i in issued), private):
        assert secret not in rows
    for i in issued:
        assert i.fingerprint in rows


# --- retention --------------------------------------------------------------------------------


def test_parse_audit_keep() -> None:
    assert parse_audit_keep(None) == AuditRetention(rows=DEFAULT_AUDIT_KEEP_ROWS)
    assert parse_audit_keep("") == AuditRetention(rows=DEFAULT_AUDIT_KEEP_ROWS)
    assert parse_audit_keep("5000") == AuditRetention(rows=5000)
    assert parse_audit_keep("30d") == AuditRetention(days=30)
    assert parse_audit_keep(" 1.5d ") == AuditRetention(days=1.5)
    assert parse_audit_keep("all") == AuditRetention()
    assert parse_audit_keep("0") == AuditRetention()
    for bad in ("-1", "ten", "30x", "0d", "1e3"):
        with pytest.raises(ConfigError, match="API_AUDIT_KEEP"):
            parse_audit_keep(bad)


def test_bad_retention_setting_stops_open(state_env: dict[str, str], config_file: Path) -> None:
    with pytest.raises(ConfigError, match="API_AUDIT_KEEP"):
        ConfigManager.open(config_file, env={**state_env, "API_AUDIT_KEEP": "forever"})


def test_row_retention_is_applied_every_n_writes(
    state_env: dict[str, str], config_file: Path
) -> None:
    with ConfigManager.open(config_file, env={**state_env, "API_AUDIT_KEEP": "100"}) as cm:
        with cm.transaction():
            for height in range(1, AUDIT_PRUNE_EVERY):
                cm.set_height(height)
        assert cm.backend.audit_count() == AUDIT_PRUNE_EVERY - 1  # not yet: no prune per write
        cm.set_height(AUDIT_PRUNE_EVERY)  # revision 1000 prunes in its own transaction
        assert cm.backend.audit_count() == 100
        rows = cm.get_audit(limit=1000)
        assert [r.revision for r in rows] == list(
            range(AUDIT_PRUNE_EVERY - 99, AUDIT_PRUNE_EVERY + 1)
        )
        cm.set_height(5000)
        assert cm.get_audit(since=AUDIT_PRUNE_EVERY)[0].revision == AUDIT_PRUNE_EVERY + 1


def test_prune_is_bounded_per_call(state_env: dict[str, str], config_file: Path) -> None:
    with ConfigManager.open(config_file, env={**state_env, "API_AUDIT_KEEP": "all"}) as cm:
        with cm.transaction():
            for height in range(1, 60):
                cm.set_height(height)
        cm.backend.audit_retention = AuditRetention(rows=5)
        with cm.transaction():
            assert cm.backend.prune_audit(batch=20) == 20
        assert cm.prune_audit() == 34
        assert cm.prune_audit() == 0
        assert [r.revision for r in cm.get_audit()] == [55, 56, 57, 58, 59]


def test_day_retention_drops_old_rows(state_env: dict[str, str], config_file: Path) -> None:
    # 0.000002 days is about 0.17 s: rows written before the pause are older than that.
    with ConfigManager.open(config_file, env={**state_env, "API_AUDIT_KEEP": "0.000002d"}) as cm:
        for height in range(1, 11):
            cm.set_height(height)
        time.sleep(0.3)
        cm.set_height(11)
        assert cm.prune_audit() == 10
        assert [r.new_value for r in cm.get_audit()] == [11]


def test_unlimited_retention_keeps_everything(state_env: dict[str, str], config_file: Path) -> None:
    with ConfigManager.open(config_file, env={**state_env, "API_AUDIT_KEEP": "all"}) as cm:
        with cm.transaction():
            for height in range(1, AUDIT_PRUNE_EVERY + 5):
                cm.set_height(height)
        assert cm.prune_audit() == 0
        assert cm.backend.audit_count() == AUDIT_PRUNE_EVERY + 4


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_audit_json_text_and_since(state_env: dict[str, str], config_file: Path) -> None:
    with ConfigManager.open(config_file, env=state_env) as cm:
        cm.add_node(node("a"))
        cm.set_height(5)
    result = run_cli("--config", str(config_file), "keys", "create", "a", env=state_env)
    assert result.returncode == 0, result.stderr
    out = run_cli("--config", str(config_file), "audit", "--json", env=state_env)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)  # the HTTP reply's shape
    assert reply["next_since"] == reply["latest_revision"] == 3
    rows = reply["entries"]
    assert [(r["revision"], r["actor"], r["action"]) for r in rows] == [
        (1, "library", "add_node"),
        (2, "library", "set_height"),
        (3, "cli", "create_security_key"),
    ]
    assert result.stdout.strip() not in out.stdout
    page = json.loads(
        run_cli(
            "--config",
            str(config_file),
            "audit",
            "--since",
            "1",
            "--limit",
            "1",
            "--json",
            env=state_env,
        ).stdout
    )
    assert [r["revision"] for r in page["entries"]] == [2] and page["next_since"] == 2
    # Without --since: the newest rows (seen on main: the oldest 100), in revision order.
    newest = run_cli("--config", str(config_file), "audit", "--limit", "2", env=state_env)
    assert [line.split()[0] for line in newest.stdout.splitlines()] == ["r2", "r3"]
    text = run_cli("--config", str(config_file), "audit", "--since", "2", env=state_env)
    assert text.returncode == 0
    assert text.stdout.startswith("r3 ") and "cli create_security_key a" in text.stdout
    bad = run_cli("--config", str(config_file), "audit", "--limit", "0", env=state_env)
    assert bad.returncode == 2 and bad.stdout == ""


def test_a_huge_value_is_audited_as_its_digest_and_size(manager: ConfigManager) -> None:
    """Seen on main: each PUT of a 5 MB node added ~10 MB to the audit trail (old and new
    value in full), and GET /admin/v1/audit?limit=10 answered 57 MB."""
    from dapi_config.store.queries import AUDIT_VALUE_LIMIT

    models = {f"model-{i}": {"args": ["--flag=" + "x" * 1000] * 5} for i in range(200)}
    big = InferenceNodeConfig.model_validate({**node("big").model_dump(), "models": models})
    manager.add_node(node("small"))
    manager.add_node(big)
    manager.put_node(big.model_copy(update={"max_concurrent": 7}))
    entries = manager.get_audit(since=0)[-2:]
    added, updated = entries
    for value in (added.new_value, updated.old_value, updated.new_value):
        assert value["omitted"] is True and value["size"] > AUDIT_VALUE_LIMIT
        assert len(value["sha256"]) == 64
    assert added.new_value == updated.old_value  # the same node: the same digest
    assert updated.old_value != updated.new_value
    assert len(json.dumps([e.__dict__ for e in entries])) < 2_000
    small = manager.get_audit(since=0)[0]
    assert "omitted" not in json.dumps(small.new_value)  # ordinary values stay in full
