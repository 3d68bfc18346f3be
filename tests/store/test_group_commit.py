"""Group commit: write calls of several threads that arrive together share one transaction and
one COMMIT, each in its own savepoint. A failing call rolls back alone; a failed shared commit
fails every call of it; nobody hears "done" before the COMMIT."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.errors import StateUnavailableError
from dapi_config.store.connection import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "state.db")
    database.prepare_files()
    with database.transaction():
        database.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
        database.execute(
            "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT, "
            "parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
        )
    yield database
    database.close()


class Commits:
    """Counts COMMITs (a commit hook runs once per commit) of a Database or a manager."""

    def __init__(self, target: Database | ConfigManager) -> None:
        self.count = 0
        if isinstance(target, Database):
            target.add_commit_hook(self._seen)
        else:
            target.on_commit(self._seen)

    def _seen(self) -> None:
        self.count += 1


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def rows(db: Database) -> dict[str, str]:
    return {str(k): str(v) for k, v in db.query_all("SELECT k, v FROM kv")}


class Queue:
    """A write call held inside its transaction while others queue up behind it, then let go:
    the calls behind it form one batch (the last of them commits)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.release = threading.Event()
        self.entered = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, BaseException] = {}
        self.returned: list[str] = []

    def hold(self, key: str) -> None:
        def body() -> None:
            self.entered.set()
            assert self.release.wait(10)

        self._start(key, body)
        assert self.entered.wait(10)

    def call(self, key: str, body: Callable[[], None] | None = None) -> None:
        queued = self.db.queued_writers
        self._start(key, body or (lambda: None))
        wait_for(lambda: self.db.queued_writers == queued + 1)

    def _start(self, key: str, body: Callable[[], None]) -> None:
        def run() -> None:
            try:
                with self.db.transaction():
                    self.db.execute("INSERT INTO kv(k, v) VALUES (?, ?)", (key, "x"))
                    body()
                self.returned.append(key)
            except BaseException as exc:
                self.errors[key] = exc

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def finish(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()


def test_calls_that_arrive_together_share_one_commit(db: Database) -> None:
    commits = Commits(db)
    queue = Queue(db)
    queue.hold("a")
    for key in ("b", "c", "d"):
        queue.call(key)
    queue.finish()
    assert queue.errors == {}
    assert rows(db) == {k: "x" for k in "abcd"}
    # "a" committed alone (nobody was queued when it began, but three were when it ended:
    # it left its transaction open for them); b, c, d joined it; d, the last, committed.
    assert commits.count == 1


def test_a_lone_call_commits_at_once(db: Database) -> None:
    commits = Commits(db)
    for i in range(5):
        with db.transaction():
            db.execute("INSERT INTO kv(k, v) VALUES (?, 'x')", (f"k{i}",))
        assert commits.count == i + 1
        # Committed: another connection sees it.
        other = sqlite3.connect(db.path)
        try:
            assert other.execute("SELECT count(*) FROM kv").fetchone()[0] == i + 1
        finally:
            other.close()


def test_a_failing_call_rolls_back_alone_and_gets_its_own_error(db: Database) -> None:
    commits = Commits(db)
    queue = Queue(db)
    queue.hold("a")
    queue.call("b")

    def fail() -> None:
        raise ValueError("c's own mistake")

    queue.call("c", fail)
    queue.call("d")
    queue.finish()
    assert set(queue.errors) == {"c"}
    assert isinstance(queue.errors["c"], ValueError)
    assert str(queue.errors["c"]) == "c's own mistake"
    assert rows(db) == {"a": "x", "b": "x", "d": "x"}
    assert commits.count == 1


def test_a_failed_shared_commit_fails_every_call_and_writes_nothing(db: Database) -> None:
    commits = Commits(db)
    queue = Queue(db)
    queue.hold("a")
    queue.call("b")

    def dangle() -> None:
        # Checked only at COMMIT: a deferred foreign key to a parent that does not exist.
        db.execute("UPDATE kv SET parent = 42 WHERE k = 'c'")

    queue.call("c", dangle)
    queue.call("d")
    queue.finish()
    assert set(queue.errors) == {"a", "b", "c", "d"}
    for error in queue.errors.values():
        assert isinstance(error, StateUnavailableError)
        assert "commit failed, nothing was written" in error.message
        assert "FOREIGN KEY" in error.message
    assert queue.returned == []
    assert rows(db) == {}
    assert commits.count == 0
    # The writer connection is usable again.
    with db.transaction():
        db.execute("INSERT INTO kv(k, v) VALUES ('e', 'x')")
    assert rows(db) == {"e": "x"}


def test_a_call_that_undoes_the_whole_transaction_fails_the_batch(db: Database) -> None:
    """Some SQLite errors (disk full, I/O errors) roll back the whole transaction, not just
    the statement: the calls that ran before in the batch must hear that nothing was written."""
    queue = Queue(db)
    queue.hold("a")
    queue.call("b")

    def undo_everything() -> None:
        db.connection().execute("ROLLBACK")  # what SQLite does on SQLITE_FULL
        raise StateUnavailableError("database or disk is full")

    queue.call("c", undo_everything)
    queue.call("d")
    queue.finish()
    assert queue.errors["c"].args == ("database or disk is full",)
    for key in ("a", "b"):
        error = queue.errors[key]
        assert isinstance(error, StateUnavailableError)
        assert "nothing was written" in error.message and "disk is full" in error.message
    # d ran after the batch failed: it began a new transaction and committed.
    assert "d" not in queue.errors
    assert rows(db) == {"d": "x"}


def test_nobody_hears_done_before_the_commit(db: Database) -> None:
    queue = Queue(db)
    queue.hold("a")
    queue.call("b")
    seen_at_return: dict[str, int] = {}
    hook_ran = threading.Event()

    def slow_commit_hook() -> None:
        # Runs after the COMMIT, before any call of the batch returns.
        assert queue.returned == []
        hook_ran.set()

    db.add_commit_hook(slow_commit_hook)
    queue.finish()
    assert hook_ran.is_set()
    other = sqlite3.connect(db.path)
    try:
        seen_at_return["count"] = other.execute("SELECT count(*) FROM kv").fetchone()[0]
    finally:
        other.close()
    assert sorted(queue.returned) == ["a", "b"] and seen_at_return["count"] == 2


def test_a_durable_call_under_normal_durability_commits_alone(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.db", durability="normal")
    db.prepare_files()
    try:
        with db.transaction():
            db.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
        commits = Commits(db)
        queue = Queue(db)
        queue.hold("a")
        queue.call("b")
        durable_done = threading.Event()

        def durable() -> None:
            with db.transaction(durable=True):
                db.execute("INSERT INTO kv(k, v) VALUES ('durable', 'x')")
                assert int(db.query_one("PRAGMA synchronous")[0]) == 2  # FULL
            durable_done.set()

        thread = threading.Thread(target=durable)
        thread.start()
        wait_for(lambda: db.queued_writers == 2)
        queue.call("c")
        queue.finish()
        thread.join(30)
        assert durable_done.is_set()
        assert queue.errors == {}
        assert set(rows(db)) == {"a", "b", "c", "durable"}
        # The durable call committed the open batch first, then itself alone: at least 2.
        assert commits.count >= 2
        with db.transaction():
            assert int(db.query_one("PRAGMA synchronous")[0]) == 1  # back to NORMAL
    finally:
        db.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=1, max_size=24))
def test_what_is_acknowledged_is_exactly_what_is_stored(tmp_path: Path, plan: list) -> None:
    """Threads write at once, some calls failing: every call that returned is stored, every
    one that raised is not, and the commits are no more than the calls."""
    path = tmp_path / f"state-{time.monotonic_ns()}.db"
    db = Database(path)
    db.prepare_files()
    try:
        with db.transaction():
            db.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
        commits = Commits(db)
        acknowledged: list[str] = []
        failed: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(len(plan))

        def call(i: int, succeed: bool, nested: int) -> None:
            key = f"k{i}"
            start.wait(10)
            try:
                with db.transaction():
                    db.execute("INSERT INTO kv(k, v) VALUES (?, 'x')", (key,))
                    for level in range(nested):
                        with db.transaction():  # a savepoint inside the member's savepoint
                            db.execute("INSERT INTO kv(k, v) VALUES (?, 'n')", (f"{key}.{level}",))
                    if not succeed:
                        raise ValueError(key)
            except ValueError:
                with lock:
                    failed.append(key)
            else:
                with lock:
                    acknowledged.append(key)

        threads = [
            threading.Thread(target=call, args=(i, ok, nested))
            for i, (ok, nested) in enumerate(plan)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        stored = set(rows(db))
        expected = {k for k in acknowledged}
        expected |= {f"{k}.{level}" for k in acknowledged for level in range(plan[int(k[1:])][1])}
        assert stored == expected
        assert len(acknowledged) + len(failed) == len(plan)
        assert commits.count <= max(1, len(acknowledged))
    finally:
        db.close()


def test_sixteen_threads_share_commits_through_the_manager(manager: ConfigManager) -> None:
    commits = Commits(manager)
    per_thread, threads_n = 25, 16
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def work(t: int) -> None:
        start.wait(10)
        try:
            for i in range(per_thread):
                manager.add_node(
                    InferenceNodeConfig(id=f"t{t}-{i}", host="h", inference_port=1, poc_port=2)
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(manager.get_nodes()) == threads_n * per_thread
    revisions = [e.revision for e in manager.get_audit(limit=1000)]
    assert len(revisions) == threads_n * per_thread
    assert len(set(revisions)) == len(revisions)
    # Shared commits happened (on two cores, sixteen writers always overlap somewhat); the
    # numbers themselves are the benchmarks' business.
    assert commits.count < threads_n * per_thread
    assert manager.backend.quick_check() == []


def test_writes_after_sqlite_rolled_the_transaction_back_never_run_on_their_own(
    db: Database,
) -> None:
    """Some I/O and disk-full errors make SQLite roll the whole transaction back. Writes that
    share it (the API's writer thread runs several in one) must then fail, not run each in a
    transaction of their own (a SAVEPOINT outside a transaction opens one, its RELEASE
    commits it): acknowledged as failed, yet stored, was the hazard."""
    with pytest.raises(StateUnavailableError, match="roll"), db.transaction():
        db.execute("INSERT INTO kv(k, v) VALUES ('first', '1')")
        db.connection().execute("ROLLBACK")  # as SQLite does after such an error
        # A later write of the batch: its savepoint, then a statement of its own.
        with pytest.raises(StateUnavailableError, match="roll it back"), db.transaction():
            db.execute("INSERT INTO kv(k, v) VALUES ('second', '2')")
        with pytest.raises(StateUnavailableError, match="roll it back"):
            db.execute("INSERT INTO kv(k, v) VALUES ('third', '3')")
    assert db.query_all("SELECT k FROM kv") == []
