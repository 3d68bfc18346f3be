"""What the PostgreSQL backend adds to the shared contract (which runs on both backends):
replicas see each other's writes, hot reads within the documented bound, audit revisions in
commit order, schema steps applied once when replicas start together, and messages that never
show a password."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from dapi_config import ConfigManager, InferenceNodeConfig, MasterKeyError, StateUnavailableError
from dapi_config.errors import BackupError
from dapi_config.store.postgres import PostgresStore, redact_url
from tests._postgres import PgServer
from tests.conftest import TEST_STATE_KEY

#: The documented bound on a hot read's staleness across replicas (README, SPEC §13).
HOT_READ_BOUND_S = 1.0


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host="h", inference_port=5000, poc_port=8080)


def replica(config_file: Path, url: str) -> ConfigManager:
    return ConfigManager.open(
        config_file, env={"API_STATE_URL": url, "API_STATE_KEY": TEST_STATE_KEY}
    )


def eventually(predicate: object, within: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``within``."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > within:
            pytest.fail(f"not within {within} s")
        time.sleep(0.005)
    return time.monotonic() - start


def test_replicas_share_one_state(pg_server: PgServer, config_file: Path) -> None:
    url = pg_server.fresh_database()
    with replica(config_file, url) as a, replica(config_file, url) as b:
        assert b.get_height() == 0  # cached on b from here
        a.set_height(41)
        a.add_node(node("n1"))
        # Every read but the hot ones is fresh at once ...
        assert [n.id for n in b.get_nodes()] == ["n1"]
        assert b.state_summary()["height"] == 41
        # ... the hot ones within the bound (the listener's notice).
        eventually(lambda: b.get_height() == 41, HOT_READ_BOUND_S)
        b.set_height(42)
        assert b.get_height() == 42  # a replica's own write: at once
        eventually(lambda: a.get_height() == 42, HOT_READ_BOUND_S)


def test_lost_listener_reads_through_and_comes_back(pg_server: PgServer, config_file: Path) -> None:
    url = pg_server.fresh_database()
    with replica(config_file, url) as a, replica(config_file, url) as b:
        assert b.get_height() == 0
        store = b.backend
        assert isinstance(store, PostgresStore)
        listener = store._listener
        eventually(lambda: listener.healthy, 5)
        before = listener.generation
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'dapi-config listener' AND datname = current_database()"
            )
        # Whatever the listener's state, b never serves a value older than the bound ...
        a.set_height(7)
        eventually(lambda: b.get_height() == 7, HOT_READ_BOUND_S)
        # ... and the listener reconnects by itself.
        eventually(lambda: listener.healthy and listener.generation > before + 1, 10)
        a.set_height(8)
        eventually(lambda: b.get_height() == 8, HOT_READ_BOUND_S)


def test_a_pooled_connection_the_server_dropped_is_replaced_before_use(
    pg_server: PgServer, config_file: Path
) -> None:
    """A connection that answered a moment ago is handed out without the pool's check (a
    round trip per write); when the server dropped it since (a restart, an admin's
    ``pg_terminate_backend``), the write, the read and the snapshot take another connection
    before anything ran, instead of failing."""
    url = pg_server.fresh_database()
    with replica(config_file, url) as cm:
        cm.set_height(1)

        def drop_our_connections() -> None:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "application_name = 'dapi-config' AND datname = current_database()"
                )

        drop_our_connections()
        cm.set_height(2)  # a write transaction
        drop_our_connections()
        assert [n.id for n in cm.get_nodes()] == []  # a lone read
        drop_our_connections()
        assert cm.state_summary()["height"] == 2  # a snapshot
        cm.add_node(node("n1"))
        assert [e.action for e in cm.get_audit(limit=10)][-2:] == ["set_height", "add_node"]


def test_audit_revisions_follow_commit_order(pg_server: PgServer, config_file: Path) -> None:
    """A poller following since=REV sees every change once, in order, while two replicas
    write concurrently (identity values handed out before commit would let it skip one)."""
    url = pg_server.fresh_database()
    writes_per_thread, threads = 25, 4
    seen: list[int] = []
    done = threading.Event()
    with (
        replica(config_file, url) as a,
        replica(config_file, url) as b,
        replica(config_file, url) as poller,
    ):

        def follow() -> None:
            since = 0
            while not done.is_set() or since < writes_per_thread * threads:
                for entry in poller.get_audit(since=since, limit=100):
                    seen.append(entry.revision)
                    since = entry.revision

        def write(index: int) -> None:
            target = a if index % 2 else b
            for i in range(writes_per_thread):
                target.set_height(index * 1000 + i)

        reader = threading.Thread(target=follow)
        reader.start()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, range(threads)))
        done.set()
        reader.join(timeout=30)
    assert seen == list(range(1, writes_per_thread * threads + 1))


def test_replicas_starting_together_apply_the_schema_once(
    pg_server: PgServer, config_file: Path
) -> None:
    url = pg_server.fresh_database(empty=True)
    with ThreadPoolExecutor(4) as pool:
        managers = list(pool.map(lambda _: replica(config_file, url), range(4)))
    try:
        managers[0].set_height(3)
        assert all(
            m.backend.schema_version() == managers[0].backend.schema_version() for m in managers
        )
    finally:
        for m in managers:
            m.close()
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == sorted(set(versions))


def test_a_password_never_appears_in_messages(config_file: Path) -> None:
    url = "postgresql://dapi:hunter2-secret@127.0.0.1:1/state"
    assert "hunter2" not in redact_url(url)
    assert "hunter2" not in redact_url("postgresql://127.0.0.1/state?password=hunter2-secret")
    with pytest.raises(StateUnavailableError) as err:
        replica(config_file, url)
    assert "hunter2" not in str(err.value)
    assert "127.0.0.1:1" in str(err.value)


def test_the_master_key_must_come_from_the_environment(
    pg_server: PgServer, config_file: Path
) -> None:
    url = pg_server.fresh_database()
    with ConfigManager.open(config_file, env={"API_STATE_URL": url}) as cm:
        cm.set_height(1)  # no secret involved: fine
        with pytest.raises(MasterKeyError, match="must come from API_STATE_KEY"):
            cm.create_worker_key()
        assert cm.get_ml_node_key_config().worker_public == ""


def test_a_database_of_something_else_is_refused(pg_server: PgServer, config_file: Path) -> None:
    url = pg_server.fresh_database(empty=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StateUnavailableError, match="holds other tables"):
        replica(config_file, url)
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
    assert tables == ["invoices"]


# --- backups: SQLite snapshot files (SPEC §13) --------------------------------------------------


def sealed_node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig.model_validate(
        {"id": node_id, "base_url": "http://10.0.0.9:8000", "auth_token": f"token-{node_id}"}
    )


def test_a_backup_opens_as_a_sqlite_state_of_its_own(
    pg_server: PgServer, config_file: Path, tmp_path: Path
) -> None:
    """The fall-back to one machine: a PostgreSQL backup is a whole SQLite state, secrets
    sealed under API_STATE_KEY and opened there with the same key."""
    url = pg_server.fresh_database()
    with replica(config_file, url) as cm:
        cm.set_height(77)
        cm.add_node(sealed_node("n1"))
        issued = cm.create_security_key("n1")
        info = cm.backup()
        revision = cm.latest_revision()
    assert info.ok and info.path.parent == config_file.parent / "backups"
    assert info.revision == revision and info.path.name.startswith(url.rsplit("/", 1)[1] + "-")
    alone = tmp_path / "one-machine" / "state.db"
    alone.parent.mkdir()
    alone.write_bytes(info.path.read_bytes())
    env = {"API_STATE_DB_PATH": str(alone), "API_STATE_KEY": TEST_STATE_KEY}
    with ConfigManager.open(config_file, env=env) as cm:
        assert cm.state_location == str(alone)
        assert cm.get_height() == 77
        token = cm.get_node("n1").auth_token
        assert token is not None and token.get_secret_value() == "token-n1"
        assert cm.verify_security_key("n1", issued.security_key)
        assert cm.latest_revision() == revision
        cm.set_height(78)  # and it takes writes


def test_restore_replaces_the_shared_state_for_every_replica(
    pg_server: PgServer, config_file: Path
) -> None:
    url = pg_server.fresh_database()
    with replica(config_file, url) as a, replica(config_file, url) as b:
        a.add_node(sealed_node("n1"))
        issued = a.create_security_key("n1")
        good = a.backup()
        a.remove_node("n1")
        a.add_node(node("later"))
        a.set_height(500)
        assert b.get_height() == 500
        before = a.latest_revision()
        result = b.restore_backup(good.path)
        assert result.pre_restore is not None and result.pre_restore.revision > good.revision
        assert [n.id for n in a.get_nodes()] == ["n1"]
        assert a.verify_security_key("n1", issued.security_key)
        eventually(lambda: a.get_height() == 0, HOT_READ_BOUND_S)
        # The trail keeps growing: the restore is the next revision, naming what it undid.
        assert a.latest_revision() == before + 1
        (entry,) = a.get_audit(since=before)
        assert entry.action == "restore" and entry.new_value["backup"] == str(good.path)
        assert entry.new_value["undone"] == {"from": good.revision + 1, "to": before}
        a.set_height(501)
        assert [e.revision for e in b.get_audit(since=before)] == [before + 1, before + 2]


def test_a_backup_moves_a_state_to_another_database(pg_server: PgServer, config_file: Path) -> None:
    with replica(config_file, pg_server.fresh_database()) as old:
        old.add_node(sealed_node("n1"))
        info = old.backup()
    with replica(config_file, pg_server.fresh_database()) as new:
        result = new.restore_backup(info.path)
        assert result.pre_restore is None  # the new database held nothing to keep
        token = new.get_node("n1").auth_token
        assert token is not None and token.get_secret_value() == "token-n1"
        # A database with no history of its own takes the backup's, then the restore's entry.
        assert [e.revision for e in new.get_audit()][-2:] == [info.revision, info.revision + 1]


def test_check_reports_the_server_schema_and_backups(
    pg_server: PgServer, config_file: Path
) -> None:
    with replica(config_file, pg_server.fresh_database()) as cm:
        first = cm.check()
        assert not first.ok and any("no good backup" in p for p in first.problems)
        assert first.items["backend"] == "postgresql" and first.items["server"] == "reachable"
        cm.set_height(1)
        cm.backup()
        again = cm.check(max_backup_age=3600)
        assert again.ok, again.problems
        assert again.to_dict()["state_path"] == cm.state_location
        assert again.items["schema_version"] == again.items["supported_schema_version"]
        assert cm.check(max_backup_age=0).problems  # older than a limit of zero


def test_a_failed_restore_changes_nothing(
    pg_server: PgServer, config_file: Path, tmp_path: Path
) -> None:
    with replica(config_file, pg_server.fresh_database()) as cm:
        cm.add_node(node("n1"))
        bad = tmp_path / "bad.db"
        bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 8000)
        with pytest.raises(BackupError, match="damaged"):
            cm.restore_backup(bad)
        assert [n.id for n in cm.get_nodes()] == ["n1"]
        assert cm.list_backups() == []  # not even a pre-restore backup
        assert not list((config_file.parent / "backups").glob(".restore-*"))
