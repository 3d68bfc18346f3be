"""Hot reads (get_height, get_current_node_version) never serve a value older than a commit
that finished before the read began: from another process, another thread, after WAL
checkpoints and resets, and with either check (the WAL-index header or the data_version
fallback)."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dapi_config import ConfigManager, StateUnavailableError
from dapi_config.store import sqlite as store_sqlite

PEER = Path(__file__).with_name("_hot_peer.py")


class Peer:
    """A second process writing the same state file, one acknowledged command at a time."""

    def __init__(self, config: Path, state: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER), str(config), str(state)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._expect_ok()

    def _expect_ok(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ok":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"peer failed: {line!r} {err}")

    def run(self, command: str) -> None:
        """Send ``command`` and wait until the peer has committed it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self._expect_ok()

    def close(self) -> None:
        try:
            _, err = self.proc.communicate("quit\n", timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err


@pytest.fixture(params=["wal-index", "data_version"])
def hot_manager(
    request: pytest.FixtureRequest, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConfigManager]:
    """A manager whose hot reads use the WAL-index header, or the data_version fallback."""
    if request.param == "data_version":
        monkeypatch.setattr(store_sqlite, "open_wal_index", lambda *_: None)
    cm = ConfigManager.open(config_file)
    try:
        assert cm.backend.hot_check == request.param
        yield cm
    finally:
        cm.close()


@pytest.fixture
def peer(hot_manager: ConfigManager) -> Iterator[Peer]:
    p = Peer(hot_manager.config_path, hot_manager.state_path)
    try:
        yield p
    finally:
        p.close()


def test_wal_index_is_used_by_default(manager: ConfigManager) -> None:
    assert manager.backend.hot_check == "wal-index"


def test_other_process_commit_is_seen_by_next_read(hot_manager: ConfigManager, peer: Peer) -> None:
    cm = hot_manager
    cm.set_height(10)
    assert cm.get_height() == 10
    assert cm.get_height() == 10  # served from memory now
    peer.run("set 11")
    assert cm.get_height() == 11
    peer.run("version 12 v-peer")
    peer.run("set 12")
    assert cm.get_height() == 12
    assert cm.get_current_node_version() == "v-peer"
    cm.set_height(13)
    assert cm.get_height() == 13
    peer.run("set 3")  # going down is a change too
    assert cm.get_height() == 3


@pytest.mark.parametrize("mode", ["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
def test_commit_right_after_checkpoint_is_seen(
    hot_manager: ConfigManager, peer: Peer, mode: str
) -> None:
    cm = hot_manager
    mx_frames = []
    for height in range(100, 112):
        peer.run(f"checkpoint {mode}")
        assert cm.get_height() == height - 1 if height > 100 else True
        peer.run(f"set {height}")
        assert cm.get_height() == height
        assert cm.get_height() == height
        if cm.backend.hot_check == "wal-index":
            mx_frames.append(_mx_frame(cm.state_path))
    if mode in ("RESTART", "TRUNCATE") and mx_frames:
        # The WAL restarts at every write, so the frame count repeats: only the salts and
        # checksums tell two commits apart, and the cache still saw every one.
        assert len(set(mx_frames)) < len(mx_frames)


def test_other_thread_commit_is_seen(hot_manager: ConfigManager) -> None:
    cm = hot_manager
    cm.set_height(1)
    assert cm.get_height() == 1
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(cm.set_height, 2).result()
        assert cm.get_height() == 2
        assert pool.submit(cm.get_height).result() == 2
        cm.set_height(3)
        assert pool.submit(cm.get_height).result() == 3
    with ConfigManager.open(cm.config_path) as other:  # another connection in this process
        other.set_height(4)
        assert cm.get_height() == 4
        cm.set_height(5)
        assert other.get_height() == 5


def test_late_local_commit_never_hides_a_newer_commit(
    hot_manager: ConfigManager, peer: Peer
) -> None:
    """Regression: a writer's post-commit step must not put its (older) value into the cache
    after another process committed a newer one and a reader has already refreshed."""
    cm = hot_manager
    cm.set_height(1)
    with ThreadPoolExecutor(max_workers=1) as reader:
        assert reader.submit(cm.get_height).result() == 1
        seen_between: list[int] = []

        def between_commit_and_cache_update() -> None:
            peer.run("set 7")
            seen_between.append(reader.submit(cm.get_height).result())

        with cm.transaction():
            cm.backend.db.after_commit(between_commit_and_cache_update)
            cm.set_height(5)
        assert seen_between == [7]
        assert reader.submit(cm.get_height).result() == 7
        assert cm.get_height() == 7


def test_readers_never_go_back_while_another_process_writes(
    hot_manager: ConfigManager, peer: Peer
) -> None:
    cm = hot_manager
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        last = 0
        while not stop.is_set():
            height = cm.get_height()
            if height < last:
                problems.append(f"{height} after {last}")
            last = height

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        for height in range(1, 60):
            peer.run(f"set {height}")
            if height % 10 == 0:
                peer.run("checkpoint TRUNCATE")
            assert cm.get_height() == height
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert problems == []


def test_rolled_back_write_never_reaches_the_cache(hot_manager: ConfigManager) -> None:
    cm = hot_manager
    cm.set_height(8)
    with pytest.raises(RuntimeError), cm.transaction():
        cm.set_height(9)
        assert cm.get_height() == 9  # the transaction sees its own write
        raise RuntimeError("abort")
    assert cm.get_height() == 8


def test_read_after_close_raises(config_file: Path) -> None:
    cm = ConfigManager.open(config_file)
    cm.set_height(4)
    assert cm.get_height() == 4
    cm.close()
    with pytest.raises(StateUnavailableError):
        cm.get_height()


def _mx_frame(state: Path) -> int:
    with open(f"{state}-shm", "rb") as shm:
        header = shm.read(48)
    return int(struct.unpack_from("=I", header, 16)[0])


DMS_BYTE = 128  # SQLite's "dead man switch" lock byte in -shm (UNIX_SHM_BASE + 8)

_TRY_DMS = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]))
except OSError:
    print("held")
else:
    print("free")
"""


def test_mapping_the_index_keeps_sqlites_locks(manager: ConfigManager) -> None:
    """Closing any descriptor of a file drops all the process's POSIX locks on it; the map must
    not do that, or another process would re-initialise -shm under our readers."""
    manager.set_height(1)
    assert manager.get_height() == 1
    out = subprocess.run(
        [sys.executable, "-c", _TRY_DMS, f"{manager.state_path}-shm", str(DMS_BYTE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "held"


def test_closed_stores_leave_no_descriptors(tmp_path: Path, config_file: Path) -> None:
    def open_fds() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    before = open_fds()
    for i in range(30):
        with ConfigManager.open(config_file, tmp_path / f"s{i}.db") as cm:
            assert cm.backend.hot_check == "wal-index"
            cm.set_height(i)
    # -shm files SQLite deleted are unmapped at the next open or close; at most the last stays.
    assert open_fds() - before <= 2


def test_restore_into_the_open_store_is_seen(hot_manager: ConfigManager) -> None:
    cm = hot_manager
    cm.set_height(10)
    backup = cm.backup()
    cm.set_height(20)
    assert cm.get_height() == 20
    cm.restore_backup(backup.path)
    assert cm.get_height() == 10
