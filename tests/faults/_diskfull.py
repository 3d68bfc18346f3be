"""Children for the full-disk and read-only tests (``python -m tests.faults._diskfull MODE DIR``).

Modes:

- ``fsize DIR``: the state file in DIR; ``RLIMIT_FSIZE`` caps every file this process writes,
  so the WAL hits the cap (SQLite reports an I/O error); then the cap is lifted.
- ``enospc DIR``: DIR is a small tmpfs mounted by ``unshare -rm`` around this process; a
  filler file takes the free space (a real ``ENOSPC``, SQLite reports SQLITE_FULL); then the
  filler is deleted.
- ``readonly DIR``: the state is opened, then its file is made read-only (chmod 0400; run
  without CAP_DAC_OVERRIDE) before the first write, then writable again. The writes run on one
  long-lived worker thread, as in a server: the writer connection is opened while the file is
  read-only, and must not stay read-only once the file is writable again.

Each mode writes until a write fails, checks that reads still return the last committed state
and that the failure changed nothing, makes room again, checks that writes work in the same
process (no restart), verifies the file with a fresh connection, and prints one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dapi_config import ConfigManager, InferenceNodeConfig
from dapi_config.errors import StateUnavailableError
from dapi_config.health import Readiness

T = TypeVar("T")
CONFIG = "api:\n  port: 8080\nnats:\n  host: 127.0.0.1\n  port: 4222\n"


def big_node(tag: str) -> InferenceNodeConfig:
    """A node of about 8 KB, so the WAL grows quickly."""
    return InferenceNodeConfig(
        id=tag,
        host="10.0.0.1",
        inference_port=5000,
        poc_port=8080,
        models={f"model-{k}": {"args": [f"--arg-{k}-" + "x" * 120]} for k in range(50)},
    )


def write_until_failure(cm: ConfigManager, prefix: str, limit: int = 5000) -> tuple[list[str], str]:
    acked: list[str] = []
    for i in range(limit):
        tag = f"{prefix}-{i}"
        try:
            with cm.transaction():  # a batch: height and node commit together or not at all
                cm.add_node(big_node(tag))
                cm.set_height(cm.get_height() + 1)
        except StateUnavailableError as exc:
            return acked, str(exc)
        acked.append(tag)
    return acked, ""


class Worker:
    """One long-lived thread that runs calls in turn (like a server's worker thread)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self._results: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._results.put((True, job()))
            except BaseException as exc:
                self._results.put((False, exc))

    def call(self, job: Callable[[], T]) -> T:
        self._jobs.put(job)
        ok, value = self._results.get(timeout=300)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(60)


def run(mode: str, directory: Path) -> dict[str, Any]:
    config = directory / "config.yaml"
    config.write_text(CONFIG)
    config.chmod(0o600)
    out: dict[str, Any] = {"mode": mode}
    cm = ConfigManager.open(config)
    state = cm.state_path
    filler = directory / "filler"
    worker = Worker()
    with cm.transaction():
        cm.set_height(0)

    # --- make the disk "full" ---------------------------------------------------------
    if mode == "fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us at the cap
        _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        cap = max(state.stat().st_size, Path(f"{state}-wal").stat().st_size) + 512 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, hard))
        acked, error = write_until_failure(cm, "a")
    elif mode == "enospc":
        # Take all free space, then give back a little so some writes fit before the end.
        # Unbuffered: a partly written block must not stay in a buffer that close() would
        # try (and fail) to write again.
        with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
        os.truncate(filler, max(0, filler.stat().st_size - 256 * 1024))
        acked, error = write_until_failure(cm, "a")
    elif mode == "readonly":
        acked, _ = write_until_failure(cm, "a", limit=5)
        # A connection already open keeps its read-write descriptor, as in any program's; the
        # trap is a writer connection first opened while the file is read-only (SQLite then
        # opens it read-only, silently, for good): a store opened, then chmod, then a write.
        cm.close()
        cm = ConfigManager.open(config)
        os.chmod(state, 0o400)
        more, error = worker.call(lambda: write_until_failure(cm, "ro", limit=5))
        acked += more
    else:
        raise SystemExit(f"unknown mode {mode}")
    out["acknowledged"] = len(acked)
    out["error"] = error
    if mode == "enospc":
        # /readyz tells the truth: the next write would fail.
        report = Readiness(cm).report()
        out["ready_when_full"] = report.ready
        out["readiness_problems"] = report.problems

    # --- reads keep working from the last committed state --------------------------------
    ids = worker.call(lambda: [n.id for n in cm.get_nodes()])
    out["reads_match_acknowledged"] = ids == acked and cm.get_height() == len(acked)

    # The same write, tried again, fails just as cleanly (nothing half-written sticks around
    # to take or give back room). The same write: a smaller one may fit in what is left.
    def second() -> bool:
        try:
            with cm.transaction():
                cm.add_node(big_node("during"))
                cm.set_height(cm.get_height() + 1)
            return False
        except StateUnavailableError:
            return True

    out["second_write_failed"] = worker.call(second)
    out["reads_after_second_failure"] = [n.id for n in cm.get_nodes()] == acked

    # --- room again: writes resume without a restart ------------------------------------
    if mode == "fsize":
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    elif mode == "enospc":
        filler.unlink()
        out["ready_with_room"] = Readiness(cm).report().ready
    else:
        os.chmod(state, 0o600)
    resumed, resume_error = worker.call(lambda: write_until_failure(cm, "b", limit=3))
    worker.stop()
    out["resumed_writes"] = len(resumed)
    out["resume_error"] = resume_error
    expected = acked + resumed
    out["reads_after_resume"] = [n.id for n in cm.get_nodes()] == expected
    out["height_after_resume"] = cm.get_height()
    cm.close()

    # --- a fresh process's view: sound file, every acknowledged change there -------------
    conn = sqlite3.connect(state)
    try:
        out["integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    with ConfigManager.open(config) as fresh:
        out["fresh_reads_match"] = [n.id for n in fresh.get_nodes()] == expected
        out["fresh_height"] = fresh.get_height()
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], Path(sys.argv[2]))))
