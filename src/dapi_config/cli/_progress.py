"""Long CLI operations say they are working, always on stderr: a rich progress display
(spinner and elapsed time) on a terminal, otherwise a log line every few seconds
(``DAPI_CONFIG_PROGRESS_INTERVAL``). Either says the phase the work reported (see
:mod:`dapi_config._progress`), how far it got and, from the pace so far, how long the phase
has left. A 35-second first open of a large legacy file used to be silent, then said only
"still working"."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from dapi_config import _progress
from dapi_config.cli._output import rich_console, stderr

log = logging.getLogger("dapi_config.cli")


class PhaseTracker:
    """The newest step reported, and when its phase started (for the pace)."""

    def __init__(self) -> None:
        self.step: _progress.Step | None = None
        self.phase_started = time.monotonic()

    def __call__(self, step: _progress.Step) -> None:
        if self.step is None or step.phase != self.step.phase:
            self.phase_started = time.monotonic()
        self.step = step

    def describe(self, what: str) -> str:
        """``what``, then the phase: ``migrating c.yaml: reading nodes 1,200/20,000 (6%,
        about 31 s left)``."""
        step = self.step
        if step is None:
            return what
        text = f"{what}: {step.phase}"
        if step.total:
            text += f" {step.done:,}/{step.total:,} ({100 * step.done // step.total}%"
            spent = time.monotonic() - self.phase_started
            if 0 < step.done < step.total and spent >= 1:
                left = spent / step.done * (step.total - step.done)
                text += f", about {left:.0f} s left"
            text += ")"
        return text


@contextlib.contextmanager
def long_operation(what: str, *, interval: float) -> Iterator[None]:
    """Show that ``what`` (``"migrating config.yaml"``) is running until the block ends (off a
    terminal, a line every ``interval`` seconds)."""
    tracker = PhaseTracker()
    if stderr.is_terminal:
        from rich.progress import (  # noqa: PLC0415 - rich on first use
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=rich_console(stderr),
            transient=True,
        ) as display:
            task = display.add_task(what, total=None)

            def show(step: _progress.Step) -> None:
                tracker(step)
                display.update(task, description=tracker.describe(what))

            with _progress.listening(show):
                yield
        return
    done = threading.Event()
    start = time.monotonic()

    def report() -> None:
        while not done.wait(interval):
            elapsed = f"{time.monotonic() - start:.0f} s"
            line = (
                f"{what}: still working ({elapsed})"
                if tracker.step is None
                else f"{tracker.describe(what)}; {elapsed} so far"
            )
            stderr.print(line, markup=False, highlight=False)

    reporter = threading.Thread(target=report, name="dapi-config-progress", daemon=True)
    reporter.start()
    try:
        with _progress.listening(tracker):
            yield
    finally:
        done.set()
        reporter.join(5)
