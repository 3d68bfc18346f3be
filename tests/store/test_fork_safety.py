"""fork(): a connection is never used from a process other than the one that opened it."""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable

from dapi_config import ConfigManager
from dapi_config.errors import StateUnavailableError

CHILD_TIMEOUT_S = 120.0


def in_child(work: Callable[[], int]) -> int:
    """Run ``work`` in a forked child; its return value is the exit code (-9: it hung)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 70
        try:
            code = work()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.02)


def test_child_gets_its_own_connection_and_commits_are_shared(manager: ConfigManager) -> None:
    manager.set_height(1)
    parent_conn = manager.backend.db.connection()

    def child() -> int:
        conn = manager.backend.db.connection()
        if conn is parent_conn:
            return 1
        assert manager.get_height() == 1
        manager.set_height(2)
        return 0 if manager.get_height() == 2 else 2

    assert in_child(child) == 0
    assert manager.get_height() == 2  # the parent sees the child's commit
    manager.set_height(3)  # and its own connection still works
    assert manager.backend.quick_check() == []


def test_transaction_continued_after_fork_raises(manager: ConfigManager) -> None:
    manager.set_height(1)
    with manager.transaction():
        manager.set_height(5)

        def child() -> int:
            try:
                manager.set_height(6)
            except StateUnavailableError as exc:
                return 0 if "after fork()" in str(exc) else 3
            return 4

        assert in_child(child) == 0
    assert manager.get_height() == 5


def test_fork_while_another_thread_writes_does_not_deadlock_the_child(
    manager: ConfigManager,
) -> None:
    """A thread of the parent holds the writer lock at fork time; that thread does not exist
    in the child, so the child must not inherit the lock as taken."""
    manager.set_height(1)
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with manager.transaction():
            manager.set_height(10)
            inside.set()
            release.wait(CHILD_TIMEOUT_S)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(CHILD_TIMEOUT_S)

        def child() -> int:
            # The parent's open transaction holds the SQLite write lock until it commits;
            # the child waits for it (busy timeout), then writes.
            manager.set_height(20)
            return 0

        pid_result: list[int] = []
        waiter = threading.Thread(target=lambda: pid_result.append(in_child(child)))
        waiter.start()
        time.sleep(0.2)  # let the child reach the lock (correctness does not depend on it)
        release.set()
        waiter.join(CHILD_TIMEOUT_S + 10)
        assert pid_result == [0]
    finally:
        release.set()
        thread.join(CHILD_TIMEOUT_S)
    assert manager.get_height() == 20


def test_child_forked_inside_a_transaction_refuses_writes_instead_of_hanging(
    manager: ConfigManager,
) -> None:
    manager.set_height(1)
    with manager.transaction():
        manager.set_height(5)

        def child() -> int:
            outcome: list[str] = []

            def write() -> None:
                try:
                    manager.set_height(6)
                    outcome.append("wrote")
                except StateUnavailableError as exc:
                    outcome.append(str(exc))

            worker = threading.Thread(target=write)  # a fresh thread: no inherited txn state
            worker.start()
            worker.join(CHILD_TIMEOUT_S)
            return 0 if outcome and "fork()" in outcome[0] else 5

        assert in_child(child) == 0
    assert manager.get_height() == 5
    manager.set_height(7)  # the parent is unaffected
    assert manager.get_height() == 7
