"""Log lines that state an outcome a command also prints.

An automatic step (a migration at start, a restore by a running service) says what it did in
the log, at WARNING, since nobody else will. The same step run by its own command prints that
outcome on stdout; there the log line would say it twice. Such lines are logged with
``extra=RESULT``, and the command hides them with :class:`HideResults`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

#: ``extra`` of a log call whose message is a result a command prints itself.
RESULT = {"result": True}


class HideResults(logging.Filter):
    """Drops the records logged with ``extra=RESULT``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "result", False)


@contextlib.contextmanager
def results_printed_elsewhere() -> Iterator[None]:
    """Inside: the result lines are not logged (the command prints them)."""
    hide = HideResults()
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(hide)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(hide)


__all__ = ["RESULT", "HideResults", "results_printed_elsewhere"]
