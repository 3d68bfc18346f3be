"""Progress of long operations (a large legacy file read and imported, a gonka.db's seed
history): the code doing the work says which phase it is in and how far it got; whoever runs
it may listen (the CLI's progress display). With nobody listening a report costs one check."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """Where a long operation is: its phase (``"reading nodes"``) and, when it counts,
    ``done`` of ``total`` items."""

    phase: str
    done: int = 0
    total: int | None = None


Listener = Callable[[Step], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


def report(phase: str, done: int = 0, total: int | None = None) -> None:
    """Tell the listeners (if any) that the work is at ``phase``, ``done`` of ``total``."""
    if _listeners:
        step = Step(phase, done, total)
        for listener in tuple(_listeners):
            listener(step)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener`` with every :class:`Step` reported (from any thread) in the block."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def counted(phase: str, items: Sequence[T], *, every: int = 500) -> Iterator[T]:
    """``items``, reporting ``phase`` with the count every ``every`` items and at the end."""
    total = len(items)
    report(phase, 0, total)
    for index, item in enumerate(items):
        if index and index % every == 0:
            report(phase, index, total)
        yield item
    report(phase, total, total)
