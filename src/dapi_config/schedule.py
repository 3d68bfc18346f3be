"""The node-version schedule's semantics, exactly as the predecessor's Go ``NodeVersionStack``.

The Go stack keeps its versions highest height first; ``Insert`` puts a new version before the
first entry of a lower height (so among equal heights the one inserted first stays first), and
``PopIf(h)`` pops from the end while the last entry's height is <= h, the last one popped
becoming current. So: every due version leaves the schedule, the greatest due height wins, and
of several versions at that height the one scheduled first wins.

Both backends keep the schedule lowest height first, ties in the order they were scheduled (the
order reads return); :func:`go_stack_order` gives the order the Go binary reads and writes.
"""

from __future__ import annotations

from collections.abc import Sequence

from dapi_config.models import NodeVersion


def due_winner(due: Sequence[NodeVersion]) -> str:
    """The version that becomes current when ``due`` (non-empty, lowest height first, ties in
    scheduling order) leaves the schedule: the greatest height, the first scheduled of it."""
    top = max(v.height for v in due)
    return next(v.version for v in due if v.height == top)


def go_stack_order(versions: Sequence[NodeVersion]) -> list[NodeVersion]:
    """``versions`` (lowest first, ties in scheduling order) as the Go stack lists them:
    highest height first, ties still in scheduling order (a stable sort)."""
    return sorted(versions, key=lambda v: -v.height)


def from_go_stack(versions: Sequence[NodeVersion]) -> list[NodeVersion]:
    """The Go stack's list (highest first, ties in scheduling order, as a Go-written file has
    it) in scheduling order for the backends; any other order a hand edit made is sorted the
    same way, ties keeping their order in the file."""
    return sorted(versions, key=lambda v: v.height)
