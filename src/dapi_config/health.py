"""Readiness: is the state file usable right now? (``GET /readyz``, ``dapi-config serve``.)

:class:`Readiness` runs a list of cheap checks; each returns a problem string or None. Checks
must stay cheap (a probe may run every second): no full integrity scan here. Other modules add
their own check with :meth:`Readiness.add_check`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from dapi_config._periodic import Periodic
from dapi_config._validation import kept_as_the_predecessor_accepted
from dapi_config.errors import DapiConfigError
from dapi_config.export import default_export_path
from dapi_config.models import NodeVersion
from dapi_config.store.backend import IntegrityCheckable

if TYPE_CHECKING:
    from dapi_config.manager import ConfigManager

log = logging.getLogger("dapi_config.health")

Check = Callable[["ConfigManager"], "str | None"]

#: Less free space than this under the state is "not ready": SQLite needs room for the WAL,
#: checkpoints and backups, and a full disk fails the next write.
MIN_FREE_BYTES = 16 * 1024 * 1024
#: Longest one periodic integrity check may run; past it, it is abandoned as inconclusive.
INTEGRITY_CHECK_LIMIT_S = 60.0
#: ``/readyz`` answers within this many seconds whatever the state backend does: a probe
#: still waiting for it then reports the state as not answering.
READY_WITHIN_S = 1.5


@dataclass(frozen=True)
class ReadinessReport:
    """The outcome of the readiness checks."""

    ready: bool
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IntegrityResult:
    """One periodic integrity check: when (POSIX seconds), whether the state was sound
    (None: inconclusive, abandoned at :data:`INTEGRITY_CHECK_LIMIT_S` or unreadable), what it
    found."""

    checked_at: float
    ok: bool | None
    problems: list[str]
    seconds: float


class _Checker(Periodic):
    """A check run every ``interval`` seconds in a thread of its own; each outcome is kept
    (:attr:`last`), logged when it finds a problem, and passed to ``on_result``."""

    #: What a problem found is about, for the CRITICAL log line.
    failed_message = ""

    def __init__(
        self,
        interval: float,
        *,
        name: str,
        run_first: bool,
        on_result: Callable[[IntegrityResult], None] | None,
    ) -> None:
        super().__init__(interval, name=name, run_first=run_first)
        self.on_result = on_result
        self.last: IntegrityResult | None = None

    def check(self) -> list[str]:
        """The problems found now; raises :class:`DapiConfigError` when inconclusive."""
        raise NotImplementedError

    def run_once(self) -> IntegrityResult:
        """Check now; never raises (a state that cannot be read is readiness's to report)."""
        started = time.monotonic()
        ok: bool | None
        try:
            problems = self.check()
            ok = not problems
        except DapiConfigError as exc:
            problems, ok = [str(exc)], None
        result = IntegrityResult(time.time(), ok, problems, time.monotonic() - started)
        if ok is False:
            log.critical("%s: %s", self.failed_message, "; ".join(problems[:3]))
        elif ok is None:
            log.warning("%s", problems[0])
        self.last = result
        if self.on_result is not None:
            self.on_result(result)
        return result


class IntegrityChecker(_Checker):
    """The state file's ``quick_check`` at start and every ``interval`` seconds, in a thread
    of its own: off the write path (a WAL reader never blocks a writer), bounded in time
    (etcd's periodic corruption check is the model). Damage it finds makes readiness fail and
    refuses writes until a restart recovers the file; the outcome and its time show on
    ``/readyz``, the overview and ``/metrics`` (``on_result``)."""

    failed_message = "integrity check of the state failed"

    def __init__(
        self,
        backend: IntegrityCheckable,
        *,
        interval: float,
        on_result: Callable[[IntegrityResult], None] | None = None,
    ) -> None:
        super().__init__(
            interval, name="dapi-config-integrity", run_first=True, on_result=on_result
        )
        self.backend = backend

    def check(self) -> list[str]:
        # Not finished in time, or the state could not be read at all (readiness says
        # why): inconclusive. Damage is what the check itself reports.
        return self.backend.quick_check(time_limit=INTEGRITY_CHECK_LIMIT_S)


class TrailChecker(_Checker):
    """The audit trail's chain and the state against it (``check --deep``) every ``interval``
    seconds; the first run waits one interval, so a start stays quick. A break or a difference
    is one CRITICAL log line naming it, and shows in the overview and on ``/metrics``
    (``on_result``); readiness is not failed: a restart cannot mend it, and the operator
    decides (``restore --to-revision``)."""

    failed_message = "the state does not match its audit trail"

    def __init__(
        self,
        manager: ConfigManager,
        *,
        interval: float,
        on_result: Callable[[IntegrityResult], None] | None = None,
    ) -> None:
        super().__init__(interval, name="dapi-config-trail", run_first=False, on_result=on_result)
        self.manager = manager

    def check(self) -> list[str]:
        return self.manager.deep_check().problems


class Readiness:
    """Cheap checks that the service's state file can be read and written."""

    def __init__(self, manager: ConfigManager) -> None:
        self.manager = manager
        #: The service's periodic integrity check, when one runs (its last outcome is shown).
        self.integrity: IntegrityChecker | None = None
        #: The service's periodic check of the audit trail, when one runs.
        self.trail: TrailChecker | None = None
        self._flight_lock = threading.Lock()
        self._flight: Future[ReadinessReport] | None = None
        #: The predecessor marks of the overview, with the revision they were computed at.
        self._marks: tuple[int, list[PredecessorMark]] | None = None
        if not manager.backend.file_backed:
            # A database server (PostgreSQL): no file or directory here to watch.
            self.checks: list[Check] = [_state_readable, _master_key_present]
            return
        # The file the service opened. If it is later deleted or replaced, the open connections
        # keep writing to the old inode, which nobody will ever read again: not ready.
        st = os.stat(manager.state_path)
        self._identity = (st.st_dev, st.st_ino)
        self.checks = [
            self._file_in_place,
            _directory_writable,
            _disk_has_room,
            _state_readable,
            _master_key_present,
        ]
        if manager.state_mode == "yaml":
            # The state is the legacy YAML file, replaced (new inode) by every atomic write.
            self.checks = [_directory_writable, _disk_has_room, _state_readable]

    def report_within(self, seconds: float = READY_WITHIN_S) -> ReadinessReport:
        """:meth:`report`, but never waiting longer than ``seconds``: a stalled database
        makes a probe answer "not ready", not hang. One run at a time: probes that arrive
        while one waits share its outcome, so a stall never piles up threads."""
        with self._flight_lock:
            flight = self._flight
            if flight is None or flight.done():
                flight = self._flight = Future()
                threading.Thread(
                    target=self._fly, args=(flight,), name="dapi-config-readiness", daemon=True
                ).start()
        try:
            return flight.result(timeout=seconds)
        except TimeoutError:
            return ReadinessReport(
                ready=False,
                problems=[
                    f"{self.manager.state_location}: the state did not answer within "
                    f"{seconds:g} s (the database server or its disk stalls)"
                ],
            )

    def _fly(self, flight: Future[ReadinessReport]) -> None:
        try:
            flight.set_result(self.report())
        except BaseException as exc:  # a bug: the probes that wait for it see it too
            flight.set_exception(exc)

    def add_check(self, check: Check) -> None:
        """Add a check: ``check(manager)`` returns a problem string, or None when fine."""
        self.checks.append(check)

    def report(self) -> ReadinessReport:
        """Run every check; never raises."""
        problems: list[str] = []
        for check in self.checks:
            try:
                problem = check(self.manager)
            except DapiConfigError as exc:
                problem = str(exc)
            except OSError as exc:
                problem = f"{exc.filename or self.manager.state_path}: {exc.strerror or exc}"
            if problem:
                problems.append(problem)
                if check == self._file_in_place:
                    break  # the other checks would only repeat the same cause
        return ReadinessReport(ready=not problems, problems=problems)

    def _file_in_place(self, manager: ConfigManager) -> str | None:
        path = manager.state_path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"{path}: the state file was removed while the service runs; restart it"
        if (st.st_dev, st.st_ino) != self._identity:
            return f"{path}: the state file was replaced while the service runs; restart it"
        return None


def _directory_writable(manager: ConfigManager) -> str | None:
    directory = manager.state_path.parent
    # SQLite needs to create the -wal/-shm files and backups there.
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory}: the state directory is not writable"
    return None


def _disk_has_room(manager: ConfigManager) -> str | None:
    directory = manager.state_path.parent
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        return (
            f"{directory}: only {free // 1024} KiB free on the disk holding the state; the next "
            "writes, backups and restarts may fail. Free some space"
        )
    return None


def _state_readable(manager: ConfigManager) -> str | None:
    manager.backend.probe()  # raises StateUnavailableError when the state is unusable
    return None


def _master_key_present(manager: ConfigManager) -> str | None:
    return manager.master_key_problem()


class PredecessorMark(BaseModel):
    """A value kept as the predecessor accepted it that new input would not be: of a node
    (``node_id``) or of the config file (``node_id`` None). Not a problem; fix it when
    convenient (the note says what)."""

    node_id: str | None
    note: str


def predecessor_marks(
    manager: ConfigManager, readiness: Readiness, revision: int
) -> list[PredecessorMark]:
    """The marks of ``manager``'s config and nodes (computed again only when the state's
    ``revision`` moved: the console asks every few seconds)."""
    cached = readiness._marks
    if cached is not None and cached[0] == revision:
        return cached[1]
    marks = [PredecessorMark(node_id=None, note=n) for n in manager.predecessor_values]
    for node in manager.get_nodes():
        marks.extend(
            PredecessorMark(node_id=node.id, note=n) for n in kept_as_the_predecessor_accepted(node)
        )
    readiness._marks = (revision, marks)
    return marks


class Overview(BaseModel):
    """What an operator looks at first (the console's health strip): readiness and why, where
    the chain is, what is scheduled next, where the state lives (a URL without its password),
    how fresh the last backup and the last export are (POSIX seconds; None: none yet), what
    the last periodic integrity check found (None: none ran, or it was inconclusive), and the
    values kept as the predecessor accepted them (:class:`PredecessorMark`)."""

    ready: bool
    problems: list[str]
    height: int
    current_node_version: str
    next_version: NodeVersion | None
    node_count: int
    revision: int
    backend: Literal["sqlite", "postgresql"]
    state_mode: Literal["db", "dual", "yaml"]
    state_location: str
    last_backup_at: float | None
    last_export_at: float | None
    integrity_ok: bool | None = None
    integrity_checked_at: float | None = None
    #: What the last periodic check of the audit trail found (None: none finished yet).
    trail_ok: bool | None = None
    trail_problems: list[str] = []
    trail_checked_at: float | None = None
    kept_as_the_predecessor_accepted: list[PredecessorMark] = []


def overview(manager: ConfigManager, readiness: Readiness) -> Overview:
    """The :class:`Overview` of ``manager`` now; never raises for an unusable state (the
    readiness problems say why, and the values it cannot read are zero)."""
    report = readiness.report_within()
    height, version, schedule, nodes, revision = 0, "", [], 0, 0
    marks: list[PredecessorMark] = []
    with contextlib.suppress(DapiConfigError):
        summary = manager.state_summary()  # counts the nodes without loading them
        height = int(summary["height"])
        version = str(summary["current_node_version"])
        schedule = [NodeVersion.model_validate(v) for v in summary["node_versions"]]
        nodes = int(summary["node_count"])
        revision = int(summary["revision"])
        marks = predecessor_marks(manager, readiness, revision)
    last_backup = None
    if manager.supports_backups:
        # Named, not verified: a probe-like view must stay cheap (the backups list verifies).
        with contextlib.suppress(DapiConfigError):
            newest = manager.list_backups(verify=False)
            last_backup = newest[0].created_at.timestamp() if newest else None
    try:
        last_export: float | None = default_export_path(manager).stat().st_mtime
    except OSError:
        last_export = None
    checked = readiness.integrity.last if readiness.integrity is not None else None
    trail = readiness.trail.last if readiness.trail is not None else None
    return Overview(
        ready=report.ready,
        problems=report.problems,
        height=height,
        current_node_version=version,
        next_version=next_scheduled(schedule, height),
        node_count=nodes,
        revision=revision,
        backend="postgresql" if not manager.backend.file_backed else "sqlite",
        state_mode=manager.state_mode,
        state_location=str(manager.state_location),
        last_backup_at=last_backup,
        last_export_at=last_export,
        integrity_ok=None if checked is None else checked.ok,
        integrity_checked_at=None if checked is None else checked.checked_at,
        trail_ok=None if trail is None else trail.ok,
        trail_problems=[] if trail is None else trail.problems[:5],
        trail_checked_at=None if trail is None else trail.checked_at,
        kept_as_the_predecessor_accepted=marks,
    )


def next_scheduled(schedule: list[NodeVersion], height: int) -> NodeVersion | None:
    """The version that becomes current next: the lowest scheduled height above ``height``
    (of several there, the first scheduled, as the predecessor's stack pops them)."""
    upcoming = [v for v in schedule if v.height > height]
    if not upcoming:
        return None
    lowest = min(v.height for v in upcoming)
    return next(v for v in upcoming if v.height == lowest)
