"""A task a service runs every so often in a daemon thread of its own (scheduled backups, the
integrity check): one implementation of starting, ticking and stopping."""

from __future__ import annotations

import threading


class Periodic:
    """Calls :meth:`run_once` every ``interval`` seconds (first at once with ``run_first``)
    in a daemon thread named ``name``; :meth:`run_once` must not raise."""

    def __init__(self, interval: float, *, name: str, run_first: bool = False) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._name = name
        self._run_first = run_first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        """One round of the task."""
        raise NotImplementedError

    def _loop(self) -> None:
        if self._run_first:
            self.run_once()
        while not self._stop.wait(self.interval):
            self.run_once()

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread, waiting up to ``timeout`` for a round in progress to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
