"""The audit trail's hash chain (SPEC §10): each row carries a hash over its own content and the
previous row's hash, so a row edited, deleted or slipped in shows at the next check.

A row's ``chain`` is ``"h1:" + HMAC-SHA256(key, previous chain + content)`` when the process
that wrote it had the master key (the key is derived from it, see
:meth:`dapi_config.crypto.MasterKeySource.chain_key`: without it nobody can recompute a
chain), else ``"s1:" + SHA-256(previous chain + content)``: still a chain, which catches an
edit by hand or by a tool, but one that a writer of the file could recompute. Rows chained
before the schema had a chain (schema step 4) are chained with SHA-256 by that step.

A plain row after a keyed one is reported too: it was written by a process without the master
key (a command run without ``API_STATE_KEY``, or a forger).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

KEYED, PLAIN = "h1:", "s1:"

#: A row as the chain covers it: revision, at, actor, action, target, old_value, new_value (the
#: stored JSON text of the values, not the decoded values: a re-encoding is not a change).
ChainRow = Sequence[Any]


def _content(row: ChainRow) -> bytes:
    return json.dumps(list(row[:7]), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def link(key: bytes | None, previous: str, row: ChainRow) -> str:
    """The ``chain`` value of ``row`` following a row whose chain is ``previous``."""
    data = previous.encode("ascii") + b"\n" + _content(row)
    if key is None:
        return PLAIN + hashlib.sha256(data).hexdigest()
    return KEYED + hmac.new(key, data, hashlib.sha256).hexdigest()


@dataclass
class ChainReport:
    """What a walk along the chain found: how many rows it checked, from and to which
    revision, which rows were keyed, and the first problem (None: the chain holds)."""

    rows: int = 0
    first: int | None = None
    last: int | None = None
    keyed_from: int | None = None
    plain_rows: int = 0
    problem: str | None = None
    problem_revision: int | None = None
    #: Rows that could not be checked: keyed rows when this process has no master key.
    unchecked: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        """One line for ``check``."""
        if self.rows == 0:
            return "audit chain: no rows"
        span = f"r{self.first}..r{self.last}"
        if self.problem is not None:
            return f"audit chain BROKEN at r{self.problem_revision}: {self.problem} ({span})"
        if self.keyed_from is None:
            how = "plain SHA-256 (no master key: the chain shows edits, but is not signed)"
        elif self.plain_rows:
            how = (
                f"HMAC-SHA256 under the master key from r{self.keyed_from} (the {self.plain_rows}"
                " row(s) before it plain SHA-256, written before the key existed)"
            )
        else:
            how = "HMAC-SHA256 under the master key"
        checked = (
            f"{self.rows - self.unchecked} of {self.rows} rows"
            if self.unchecked
            else (f"{self.rows} rows")
        )
        extra = "".join(f"; {note}" for note in self.notes)
        return f"audit chain verified: {checked} ({span}), {how}{extra}"


def verify(
    rows: Iterable[ChainRow],
    key: bytes | None,
    *,
    start: str = "",
    start_revision: int | None = None,
) -> ChainReport:
    """Walk ``rows`` (revision order; each the 7 chained columns and its stored ``chain``)
    from a previous chain ``start`` (the retention checkpoint, or ``""``)."""
    report = ChainReport()
    previous, previous_revision = start, start_revision
    for row in rows:
        revision, stored = int(row[0]), row[7]
        report.rows += 1
        if report.first is None:
            report.first = revision
        report.last = revision
        after = f"r{previous_revision}" if previous_revision is not None else "the start"
        if not isinstance(stored, str) or not stored.startswith((KEYED, PLAIN)):
            return _broken(report, revision, "the row has no chain value (slipped in by hand?)")
        if stored.startswith(KEYED):
            if report.keyed_from is None:
                report.keyed_from = revision
            if key is None:
                report.unchecked += 1
                report.notes = ["keyed rows not checked: this process has no master key"]
                previous, previous_revision = stored, revision
                continue
        else:
            report.plain_rows += 1
            if report.keyed_from is not None:
                return _broken(
                    report,
                    revision,
                    f"written without the master key after r{report.keyed_from} was signed "
                    "(a command run without API_STATE_KEY or the key file, or a forged row)",
                )
        expected = link(key if stored.startswith(KEYED) else None, previous, row)
        if not hmac.compare_digest(expected, stored):
            return _broken(
                report,
                revision,
                f"its hash does not match its content and {after}'s hash: the row was edited, "
                f"or a row between {after} and it was deleted",
            )
        previous, previous_revision = stored, revision
    return report


def _broken(report: ChainReport, revision: int, problem: str) -> ChainReport:
    report.problem, report.problem_revision = problem, revision
    return report


def chain_rows(
    rows: Iterable[ChainRow], key: bytes | None, previous: str = ""
) -> Iterable[tuple[str, int]]:
    """``(chain, revision)`` for each of ``rows`` (the 7 chained columns), chained in order
    from ``previous``: what schema step 4 and a state copy write."""
    for row in rows:
        previous = link(key, previous, row)
        yield previous, int(row[0])


KeyProvider = Callable[[], bytes | None]
