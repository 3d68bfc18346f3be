"""Many threads and several processes on one state file: nothing lost, nothing locked."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from dapi_config import ConfigManager, InferenceNodeConfig

WRITER = [sys.executable, "-m", "tests.store._writer"]


def test_threads_lose_no_writes(manager: ConfigManager) -> None:
    threads_n, per_thread = 8, 40
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                manager.add_node(
                    InferenceNodeConfig(id=f"t{t}-{i}", host="h", inference_port=1, poc_port=2)
                )
                with manager.transaction():
                    # read-modify-write: only safe because the write lock is taken up front
                    manager.set_height(manager.get_height() + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert manager.get_height() == threads_n * per_thread
    assert len(manager.get_nodes()) == threads_n * per_thread
    assert manager.backend.quick_check() == []


def test_threads_read_while_writing(manager: ConfigManager) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def read() -> None:
        last = 0
        while not stop.is_set():
            height = manager.get_height()
            assert height >= last, "a reader never goes back in time"
            last = height
        seen.append(last)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    for h in range(1, 200):
        manager.set_height(h)
    stop.set()
    for r in readers:
        r.join()
    assert len(seen) == 3
    assert manager.get_height() == 199


def test_two_processes_lose_nothing(config_file: Path) -> None:
    with ConfigManager.open(config_file) as cm:
        cm.set_height(0)
    rounds = 60
    procs = [
        subprocess.Popen(
            [*WRITER, "contend", str(config_file), tag, str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert "locked" not in err
        assert out.strip() == "done"
    with ConfigManager.open(config_file) as cm:
        assert cm.get_height() == 2 * rounds
        ids = {n.id for n in cm.get_nodes()}
        assert ids == {f"{tag}-{i}" for tag in ("a", "b") for i in range(rounds)}


def test_other_process_write_is_visible_to_next_read(manager: ConfigManager) -> None:
    manager.set_height(10)
    assert manager.get_height() == 10  # now cached
    assert manager.get_current_node_version() == ""
    manager.add_node_version(15, "v-other")
    for target in (20, 21, 5):
        subprocess.run(
            [*WRITER, "set", str(manager.config_path), str(target)], check=True, timeout=120
        )
        assert manager.get_height() == target
        assert manager.get_current_node_version() == "v-other"


def test_other_thread_write_is_visible(config_file: Path) -> None:
    with ConfigManager.open(config_file) as a, ConfigManager.open(config_file) as b:
        a.set_height(3)
        assert b.get_height() == 3
        b.set_height(4)
        assert a.get_height() == 4
        done = threading.Event()

        def other() -> None:
            a.set_height(77)
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert done.is_set()
        assert b.get_height() == 77
        assert a.get_height() == 77
