"""``serve --workers N``: N processes serving one port and one state, and their supervisor.

The supervisor (the process ``serve`` started as) checks what must hold and binds the port
once, closes its own manager, then forks the workers: each opens the state itself (a SQLite
connection must never cross ``fork()``), serves the inherited socket (the kernel hands each
connection to one of them), and writes through its own writer thread. What they share lives
where every process sees it: the state (another worker's commit is seen by the next read, as
a CLI's is; ``audit?wait=`` polls it), and the metrics, counted in files of a directory the
supervisor makes (a scrape of any worker reports the whole service). Worker 0 is the primary:
the scheduled backups and the periodic export run there only.

A worker that dies (``kill -9``, a crash) is started again in its place, with its role; its
acknowledged writes were committed before it answered. SIGTERM or SIGINT to the supervisor
stops every worker gracefully (in-flight requests finish), then the supervisor. A worker that
keeps dying as soon as it starts stops the service with an error instead of a restart loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from dapi_config import _failpoints
from dapi_config.errors import ConfigError, DapiConfigError
from dapi_config.manager import ConfigManager
from dapi_config.service import (
    Prepared,
    ServiceOptions,
    WorkerRole,
    log_serving,
    prepare_service,
    serve_prepared,
)

log = logging.getLogger("dapi_config.serve")

#: The most workers ``serve --workers`` starts.
MAX_WORKERS = 64
#: A worker that ends within this many seconds of its start has failed to start.
FAILED_START_S = 5.0
#: Failed starts in a row of one worker after which the service stops instead.
MAX_FAILED_STARTS = 3
#: How long the supervisor waits for its workers to finish after SIGTERM, before SIGKILL.
STOP_TIMEOUT_S = 40.0

OpenManager = Callable[[], AbstractContextManager[ConfigManager]]


@dataclass
class _Worker:
    role: WorkerRole
    pid: int
    started: float
    failed_starts: int = 0


def check_workers(cm: ConfigManager, workers: int) -> None:
    """Refuse (:class:`ConfigError`) a worker count this state cannot be served with."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS} (got {workers})")
    if workers > 1 and cm.state_mode != "db":
        raise ConfigError(
            f"--workers {workers} needs API_STATE_MODE=db (this state is in {cm.state_mode!r} "
            "mode: its mirror or single YAML file has one writer); serve it with one worker"
        )


def run_workers(open_manager: OpenManager, options: ServiceOptions, workers: int) -> int | None:
    """Serve with ``workers`` processes until SIGTERM/SIGINT; returns the stopping signal.

    ``open_manager`` opens the state (called once here for the checks, then once in each
    worker). Raises what :func:`prepare_service` raises, and :class:`DapiConfigError` when a
    worker keeps failing at start.
    """
    with open_manager() as cm:
        check_workers(cm, workers)
        prepared = prepare_service(cm, options)
        log_serving(prepared, cm.state_location, workers)  # before any worker answers
    metrics_dir = Path(tempfile.mkdtemp(prefix="dapi-config-metrics-"))
    try:
        return _Supervisor(open_manager, prepared, workers, metrics_dir).run()
    finally:
        prepared.listener.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Supervisor:
    def __init__(
        self, open_manager: OpenManager, prepared: Prepared, count: int, metrics_dir: Path
    ) -> None:
        self.open_manager = open_manager
        self.prepared = prepared
        self.count = count
        self.metrics_dir = metrics_dir
        self.workers: dict[int, _Worker] = {}
        self.stop_signals: list[int] = []

    def run(self) -> int | None:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        failure: str | None = None
        try:
            for index in range(self.count):
                self._start(WorkerRole(index, index == 0, self.metrics_dir))
            log.info(
                "serving with %d workers (pids %s); worker 0 runs the backups and the export",
                self.count,
                ", ".join(str(pid) for pid in self.workers),
            )
            failure = self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failure is not None:
            raise DapiConfigError(failure)
        stopped_by = self.stop_signals[0] if self.stop_signals else None
        log.info("stopped%s", f" by signal {stopped_by}" if stopped_by else "")
        return stopped_by

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_signals.append(signum)
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _watch(self) -> str | None:
        """Wait for workers to end; start each again until a stop. Returns why the service
        must stop on its own (a worker that cannot start), or None."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return None
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            _forget(self.metrics_dir, pid)
            if self.stop_signals:
                continue
            how = _how_it_ended(status)
            failed = time.monotonic() - worker.started < FAILED_START_S
            failed_starts = worker.failed_starts + 1 if failed else 0
            if failed_starts >= MAX_FAILED_STARTS:
                return (
                    f"worker {worker.role.index} {how} {failed_starts} times within "
                    f"{FAILED_START_S:.0f} s of its start: stopping the service (its log lines "
                    "above say why)"
                )
            log.error("worker %d (pid %d) %s; starting it again", worker.role.index, pid, how)
            self._start(worker.role, failed_starts=failed_starts)
        return None

    def _start(self, role: WorkerRole, *, failed_starts: int = 0) -> None:
        # fork() copies only the calling thread: any other thread's locks would be copied
        # held. The supervisor runs none (its manager is closed before the first fork).
        if threading.active_count() != 1:
            raise DapiConfigError(
                "cannot start workers: the supervisor runs other threads "
                f"({', '.join(t.name for t in threading.enumerate())})"
            )
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(self._worker_main(role))
        self.workers[pid] = _Worker(role, pid, time.monotonic(), failed_starts)

    def _worker_main(self, role: WorkerRole) -> int:
        """The body of a forked worker; its exit code."""
        code = 1
        try:
            _failpoints.hit("serve.worker_start")
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)  # the supervisor's are not the worker's
            for handler in logging.getLogger().handlers:
                handler.addFilter(_WorkerPrefix(role.index))
            with self.open_manager() as cm:
                serve_prepared(cm, self.prepared, role)
            code = 0
        except DapiConfigError as exc:
            log.error("worker %d: %s", role.index, exc)
        except BaseException:
            log.exception("worker %d failed", role.index)
        finally:
            logging.shutdown()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
        return code

    def _stop_all(self) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.workers:
            if time.monotonic() > deadline:
                for pid in self.workers:
                    log.error("worker pid %d did not stop in time: killing it", pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = float("inf")
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            self.workers.pop(pid, None)
            _forget(self.metrics_dir, pid)


class _WorkerPrefix(logging.Filter):
    """Says which worker logged each line (``worker 1: ...``)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.prefix = f"worker {index}: "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            record.msg = f"{self.prefix}{record.msg}"
        return True


def _forget(metrics_dir: Path, pid: int) -> None:
    from dapi_config.api import forget_worker  # noqa: PLC0415 - with the service

    forget_worker(metrics_dir, pid)


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by {name}"
    return f"exited with {os.WEXITSTATUS(status)}"


__all__ = ["MAX_WORKERS", "check_workers", "run_workers"]
