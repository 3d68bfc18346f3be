"""One writer thread for the hot write routes: concurrent requests share a transaction.

Sixteen clients writing nodes at once used to be sixteen pool threads, each opening its own
write call and queuing on the store's writer lock, handing the GIL and the lock around at every
step. Here every hot write is a job on one queue; one thread takes all the jobs waiting, runs
them in one :meth:`ConfigManager.transaction` (each job's own write a savepoint in it: a job
that fails is undone alone and gets its own error), commits once (one fsync, or one PostgreSQL
commit, for the lot) and only then answers every request of the batch. A lone request is its
own transaction and commits at once; nobody hears "stored" before the commit that stored it
returned.

A job may hand back a :class:`Staged` write: its checks and parsing ran before the
transaction, its ``write`` runs in it, and its reply is built after the commit. The
transaction (and with it the turn to write among the processes of ``serve --workers N``)
then holds only the store's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dapi_config.manager import ConfigManager

log = logging.getLogger("dapi_config.api")

T = TypeVar("T")

#: Most jobs committed together (the store's own group commit has the same bound).
MAX_BATCH = 64
#: Seconds the thread waits for work before it ends (the next job starts it again): an app
#: nobody writes to holds no thread.
IDLE_S = 30.0

_Job = tuple[Callable[[], Any], asyncio.Future[Any]]


@dataclass(frozen=True)
class Staged:
    """A write whose request is checked and parsed: ``write(manager)`` runs in the
    (possibly shared) transaction, ``answer(result)`` builds the reply after the commit, and
    ``on_error(exc)``, when given, answers an exception of either instead of raising it."""

    write: Callable[[ConfigManager], Any]
    answer: Callable[[Any], Any]
    on_error: Callable[[Exception], Any] | None = None

    def run(self, manager: ConfigManager) -> Any:
        """Write and answer here (outside the writer thread: the framework's routes)."""
        return self.answer(self.write(manager))


class WriteQueue:
    """Runs write jobs for ``manager`` on one thread, committing the jobs that wait together."""

    def __init__(self, manager: ConfigManager) -> None:
        self.manager = manager
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def run(self, job: Callable[[], T | Staged]) -> T | Any:
        """``job()`` on the writer thread; its result, or when it is a :class:`Staged` write,
        that write run in a transaction it may share and answered once that committed. Its
        exception, or the commit's, is raised here."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((job, future))
        self._ensure_thread()
        return await future

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="dapi-config-writer", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                first = self._jobs.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        # The checks of a batch (who is calling: a read each) share one read transaction.
        with self.manager.snapshot() if len(batch) > 1 else contextlib.nullcontext():
            prepared = [_outcome(job) for job, _ in batch]
        staged = [i for i, (ok, value) in enumerate(prepared) if ok and isinstance(value, Staged)]
        written: dict[int, tuple[bool, Any]] = {}
        try:
            # A lone write is its own transaction, exactly as outside the queue (a write that
            # fails is then a rolled-back transaction, not an empty committed one).
            with self.manager.transaction() if len(staged) > 1 else contextlib.nullcontext():
                for i in staged:
                    written[i] = _outcome(functools.partial(prepared[i][1].write, self.manager))
        except Exception as exc:  # the commit failed: nothing of the batch was written
            written = {i: (False, exc) for i in staged}
        for i, outcome in written.items():
            prepared[i] = _answered(prepared[i][1], outcome)
        for (ok, value), (_, future) in zip(prepared, batch, strict=True):
            loop = future.get_loop()
            try:
                loop.call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:  # the loop is closed: the server stopped meanwhile
                log.debug("write answered after the server stopped")


def _answered(job: Staged, written: tuple[bool, Any]) -> tuple[bool, Any]:
    """The outcome of a staged write: its reply, or what ``on_error`` makes of its error."""
    ok, result = written
    if ok:
        ok, result = _outcome(lambda: job.answer(result))
    if not ok and job.on_error is not None:
        on_error = job.on_error
        error = result
        ok, result = _outcome(lambda: on_error(error))
    return ok, result


def _outcome(call: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, call()
    except Exception as exc:
        return False, exc


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
