"""Long CLI operations say they are working, always on stderr: a rich progress display
(spinner and elapsed time) on a terminal, otherwise a log line every few seconds
(``DAPI_CONFIG_PROGRESS_INTERVAL``). A 35-second first open of a large legacy file used to be
silent."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from dapi_config.cli._output import rich_console, stderr

log = logging.getLogger("dapi_config.cli")


@contextlib.contextmanager
def long_operation(what: str, *, interval: float) -> Iterator[None]:
    """Show that ``what`` (``"migrating config.yaml"``) is running until the block ends (off a
    terminal, a line every ``interval`` seconds)."""
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
        ) as progress:
            progress.add_task(what, total=None)
            yield
        return
    done = threading.Event()
    start = time.monotonic()

    def report() -> None:
        while not done.wait(interval):
            stderr.print(
                f"{what}: still working ({time.monotonic() - start:.0f} s)",
                markup=False,
                highlight=False,
            )

    reporter = threading.Thread(target=report, name="dapi-config-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        done.set()
        reporter.join(5)
