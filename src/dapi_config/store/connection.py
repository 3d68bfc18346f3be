"""Opening the state file, pragmas, connections and transactions.

Rules this module enforces (each one learned the hard way by SQLite users):

- ``isolation_level=None``: the driver never opens a transaction behind our back; every write
  runs in an explicit ``BEGIN IMMEDIATE`` so the write lock is taken up front and the busy
  timeout applies (a deferred transaction that upgrades to a write fails at once with
  "database is locked" instead of waiting).
- One read connection per thread and per process, opened lazily and never shared. A connection
  carried across ``fork()`` must not be used in the child (SQLite's documented corruption path),
  so a connection used from another pid raises, and a thread whose cached connection belongs to a
  parent process silently gets a fresh one.
- Pragmas are set in exactly one place, :meth:`Database._configure`, outside any transaction.
- The file and its ``-wal``/``-shm`` companions are created 0600 before SQLite touches them
  (SQLite gives the companions the main file's mode).
- Group commit: each process writes through one writer connection. Write calls of several
  threads that arrive together share one transaction and one fsync, each in its own SAVEPOINT
  (a failing call rolls back alone and gets its own error); nobody hears "done" before the shared
  COMMIT returned. A lone call commits at once. In-process writers queue on a Python lock, so
  there is no busy-polling between threads, and post-commit work (log lines, hooks) runs in
  commit order.
- An encrypted state file (:mod:`.cipher`) is opened through the SQLCipher driver, whose
  ``PRAGMA key`` is the first statement on every connection. The driver has its own exception
  classes: every ``except`` in the store uses :data:`SQLITE_ERRORS` (and friends) to catch both.
  The driver is imported only when an encrypted file is first opened.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from dapi_config import _failpoints
from dapi_config._files import make_durable_dir
from dapi_config.errors import DapiConfigError, StateUnavailableError
from dapi_config.store import _held_files
from dapi_config.store._writer_lock import WriterTurn
from dapi_config.store.sqlcipher import StateCipher, unreadable_message, when_driver_loaded

log = logging.getLogger(__name__)

Durability = Literal["full", "normal"]

#: "DAPI" in ASCII: ``PRAGMA application_id`` marks the file as a dapi-config state file.
APPLICATION_ID = 0x44415049
#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 30.0
#: Cap on the WAL size kept after a checkpoint (bytes).
JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024
#: Page cache per connection (KiB; SQLite's default is 2 MiB). Every thread that reads has its
#: own connection (the service's pool has up to 40), and the OS caches the file once for all
#: of them: a smaller private cache bounds memory at no measurable cost to reads.
PAGE_CACHE_KIB = 512

#: Every SQLite error class in use: the stdlib's and, once the encryption extra's driver is
#: loaded (on first use), the SQLCipher driver's (same names, different classes). Catch these,
#: never ``sqlite3.Error``. Other modules name them ``connection.SQLITE_ERRORS``, looked up
#: when an error is matched: a copy imported before the driver loaded would miss its classes.
SQLITE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
OPERATIONAL_ERRORS: tuple[type[Exception], ...] = (sqlite3.OperationalError,)


def _include_driver_errors(module: ModuleType) -> None:
    global SQLITE_ERRORS, INTEGRITY_ERRORS, OPERATIONAL_ERRORS  # noqa: PLW0603 - see above
    SQLITE_ERRORS = (sqlite3.Error, module.Error)
    INTEGRITY_ERRORS = (sqlite3.IntegrityError, module.IntegrityError)
    OPERATIONAL_ERRORS = (sqlite3.OperationalError, module.OperationalError)


when_driver_loaded(_include_driver_errors)

# Connections inherited from a parent process. Closing them in the child could release the
# parent's POSIX locks on the file, so they are parked here and never touched again.
_INHERITED: list[sqlite3.Connection] = []

# Every open Database of this process, for the fork handlers below.
_LIVE: weakref.WeakSet[Database] = weakref.WeakSet()
#: How long fork() waits for this process's writers to finish their transaction.
FORK_WAIT_S = BUSY_TIMEOUT_S


# fork() while a thread is inside a write transaction copies two kinds of state into the child
# as "locked by someone": our writer lock (held by a thread that does not exist in the child)
# and SQLite's own in-process lock bookkeeping for the file (it believes a sibling connection
# holds the write lock). Either makes the child's first write wait forever (found by
# tests/store/test_fork_safety.py). So fork() first waits for in-flight transactions of other
# threads to finish; if it cannot (the forking thread is itself inside a transaction, or a
# writer outlasts FORK_WAIT_S), the child refuses to write with a clear error instead of
# hanging.
def _before_fork() -> None:
    for db in list(_LIVE):
        db._quiesce_for_fork()


def _after_fork_in_parent() -> None:
    for db in list(_LIVE):
        db._resume_after_fork()


def _after_fork_in_child() -> None:
    for db in list(_LIVE):
        db._renew_after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 if missing; tighten an existing file to 0600 (without
    closing a descriptor this process holds: see :mod:`._held_files`)."""
    _held_files.create_private(path)


READ_ONLY_MESSAGE = "the state file or its directory is read-only; fix permissions and retry"


def sqlite_error_message(exc: BaseException) -> str:
    """A human message for an SQLite/OS error, naming the likely cause."""
    text = str(exc)
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code == "SQLITE_FULL" or "database or disk is full" in text:
        return "the disk holding the state file is full; free space and retry"
    if code.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return f"I/O error on the state file ({code or text}); check the disk and free space"
    if code.startswith("SQLITE_READONLY") or "readonly" in text:
        return READ_ONLY_MESSAGE
    if code.startswith("SQLITE_BUSY") or "locked" in text:
        return "the state file is locked by another writer for too long; retry later"
    if code.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "cannot open the state file; check the path and permissions"
    if is_damage(exc):
        return f"the state file is damaged ({text}); run `dapi-config check`"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "the disk holding the state file is full; free space and retry"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{READ_ONLY_MESSAGE} ({exc.strerror})"
    return text


def is_damage(exc: BaseException) -> bool:
    """True for an error that says the file's content is damaged (not a full disk, a lock)."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    return (
        code in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or "malformed" in text
        or ("not a database" in text)
    )


def is_not_a_database(exc: BaseException) -> bool:
    """True for SQLITE_NOTADB: a wrong key, an encrypted file opened plain, or damage."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    return code == "SQLITE_NOTADB" or "not a database" in str(exc)


def open_error_message(
    path: str | os.PathLike[str], exc: BaseException, cipher: StateCipher | None
) -> str:
    """``sqlite_error_message`` prefixed by the path, turning "file is not a database" into
    what the operator must do when it is about encryption (wrong key, mode not enabled...)."""
    if is_not_a_database(exc):
        message = unreadable_message(path, cipher)
        if message is not None:
            return message
    return f"{path}: {sqlite_error_message(exc)}"


def register_hook(hooks: list[Any], hook: Any) -> Callable[[], None]:
    """Append ``hook`` to ``hooks``; returns the function that removes it again."""
    hooks.append(hook)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            hooks.remove(hook)

    return remove


#: At most this many write calls share one commit (bounds how long the first of them waits).
GROUP_COMMIT_MAX = 64
#: The savepoint each write call that joins an open shared transaction runs in.
_MEMBER_SAVEPOINT = "member"


class _Process:
    """This process's id, kept up to date across ``fork()``: asked before every statement,
    where a ``getpid`` system call each time showed in the profile of a write."""

    pid = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()


os.register_at_fork(after_in_child=_Process.forked)


@dataclass
class _ThreadState:
    pid: int
    #: This thread's read connection.
    conn: sqlite3.Connection
    depth: int = 0
    #: The process's writer connection, while this thread runs a write call.
    writing: sqlite3.Connection | None = None
    #: Work to run after the outermost COMMIT (cache updates, hooks), in order.
    on_commit: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class _Batch:
    """Write calls committed together: one open transaction on the writer connection."""

    members: int = 0
    #: Every member's post-commit work, in the order the members ran.
    on_commit: list[Callable[[], None]] = field(default_factory=list)
    #: Held until the batch is over (a plain lock as a latch: far cheaper to make than an
    #: Event, and a lone call, which ends its own batch, never waits on it).
    latch: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    #: Why nothing of the batch was written (the commit, or a member, undid it all).
    error: str | None = None

    def __post_init__(self) -> None:
        self.latch.acquire()

    def finish(self) -> None:
        self.finished = True
        self.latch.release()

    def wait(self) -> None:
        if not self.finished:
            with self.latch:
                pass


class Database:
    """An SQLite state file with per-thread connections and explicit transactions."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "full",
        connect: Callable[..., sqlite3.Connection] | None = None,
        on_connect: Callable[[sqlite3.Connection], None] | None = None,
        cipher: StateCipher | None = None,
        queue_writers: bool = False,
    ) -> None:
        """``cipher``: the key of an encrypted file (None: plain; default: from
        ``API_STATE_ENCRYPTION``/``API_STATE_KEY``). A custom ``connect`` replaces it.
        ``queue_writers``: writers of several processes wait for their turn in the kernel
        (:mod:`._writer_lock`; for the live state file, not for a backup or a copy).

        Raises :class:`ConfigError` when the environment asks for encryption it cannot provide.
        """
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        if connect is not None and cipher is not None:
            raise ValueError("pass either connect= or cipher=, not both")
        self.path = Path(path)
        self.durability: Durability = durability
        #: The key this file is opened with (None: a plain SQLite file).
        self.cipher: StateCipher | None = None if connect is not None else cipher
        # The cipher's connect runs PRAGMA key before anything else, on_connect after it.
        self._connect = connect or (
            self.cipher.connect if self.cipher is not None else sqlite3.connect
        )
        self._on_connect = on_connect
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: list[tuple[int, sqlite3.Connection]] = []
        self._all_lock = threading.Lock()
        self._closed = False
        # Registered through add_commit_hook / add_transaction_observer / add_fork_hook.
        self._commit_hooks: list[Callable[[], None]] = []
        self._transaction_observers: list[Callable[[float, bool], None]] = []
        self._fork_hooks: list[Callable[[], None]] = []
        self._writer: int | None = None  # thread holding the writer lock
        # The writer connection (per process) and the shared transaction open on it, if any;
        # both are guarded by _write_lock. _queued holds one item per thread waiting for that
        # lock (deque appends and pops are atomic: no second lock on the write path).
        self._writer_conn: sqlite3.Connection | None = None
        self._batch: _Batch | None = None
        self._queued: collections.deque[None] = collections.deque()
        #: The turn among processes, held from BEGIN to the end of each shared transaction.
        self._turn = WriterTurn(self.path, enabled=queue_writers)
        self._retired: list[sqlite3.Connection] = []
        self._identity: tuple[int, int] | None = None
        #: This process's descriptor of the file, held from first use to close (see
        #: :mod:`._held_files`: closing any other one would drop SQLite's locks).
        self._held: _held_files.FileRef | None = None
        #: What the last read or write found damaged in the file (None: nothing found).
        self.damage: str | None = None
        self._held_for_fork = False
        self._forked_mid_write = False
        #: Set in a child forked while a write transaction was open: writes would hang.
        self._fork_poisoned = False
        _LIVE.add(self)

    # --- fork handling (see _before_fork) ------------------------------------------------

    def add_commit_hook(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook()`` after every outermost commit (in commit order, under the writer
        lock; a failing hook is logged, never raised). Returns the function that removes it."""
        return register_hook(self._commit_hooks, hook)

    def add_transaction_observer(
        self, observer: Callable[[float, bool], None]
    ) -> Callable[[], None]:
        """Call ``observer(seconds, committed)`` after every outermost write transaction (the
        seconds include the wait for the writer lock). For metrics: cheap, never raising.
        Returns the function that removes it."""
        return register_hook(self._transaction_observers, observer)

    def add_fork_hook(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook()`` in a forked child, to renew locks that users of this Database own.
        Returns the function that removes it."""
        return register_hook(self._fork_hooks, hook)

    def _quiesce_for_fork(self) -> None:
        if self._closed or self._writer == threading.get_ident():
            self._held_for_fork = False
            self._forked_mid_write = not self._closed
            return
        self._held_for_fork = self._write_lock.acquire(timeout=FORK_WAIT_S)
        self._forked_mid_write = not self._held_for_fork
        if self._held_for_fork and self._batch is not None:
            # Calls waiting for a shared commit: commit it now, not in a child's copy.
            self._commit_batch()

    def _resume_after_fork(self) -> None:
        if self._held_for_fork:
            self._write_lock.release()
        self._held_for_fork = False

    def _renew_after_fork(self) -> None:
        # No thread of the child holds these yet.
        self._write_lock = threading.Lock()
        self._all_lock = threading.Lock()
        self._queued = collections.deque()
        self._writer = None
        if self._writer_conn is not None:
            _INHERITED.append(self._writer_conn)
        self._writer_conn = None
        self._batch = None
        self._turn.forget_inherited()
        self._held_for_fork = False
        self._fork_poisoned = self._forked_mid_write
        for hook in self._fork_hooks:
            hook()

    # --- connections ---------------------------------------------------------------------

    def prepare_files(self) -> None:
        """Create the state file and its WAL companions 0600 (before SQLite creates them)."""
        make_durable_dir(self.path.parent, mode=0o777)
        if self._held is None:
            self._held = _held_files.acquire(self.path, create=True)
        else:
            os.chmod(self.path, 0o600)
        for suffix in ("-wal", "-shm"):
            companion = Path(f"{self.path}{suffix}")
            if companion.exists():
                os.chmod(companion, 0o600)

    def _hold_file(self) -> None:
        if self._held is None:
            with contextlib.suppress(OSError):  # missing or unreadable: SQLite says which
                self._held = _held_files.acquire(self.path)

    def _open_connection(self) -> sqlite3.Connection:
        if self._identity is not None:
            # Once the file was opened, a thread's first connection must not create an empty
            # one where it was removed (every later read would then say "replaced").
            self.check_same_file()
        self._hold_file()
        try:
            conn = self._connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except SQLITE_ERRORS as exc:
            raise StateUnavailableError(self._message(exc)) from None
        try:
            if self._on_connect is not None:
                self._on_connect(conn)
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        try:
            self.check_same_file()
        except BaseException:
            conn.close()
            raise
        with self._all_lock:
            self._all.append((os.getpid(), conn))
        return conn

    def _rolled_back(self) -> StateUnavailableError:
        """The error of a statement in a write call whose transaction SQLite has rolled back
        (some I/O and disk-full errors end the whole transaction): the statement must not
        run on its own, outside it."""
        return StateUnavailableError(
            f"{self.path}: an earlier error in this write's transaction made SQLite roll it "
            "back; nothing of it was written"
        )

    def check_same_file(self) -> None:
        """Raise if the path no longer names the file this Database first opened.

        An open connection keeps using the old inode after a ``mv``/``rm``/restore-by-rename
        of the state file: its writes would land in a file nobody will ever read. Checked
        before every write transaction (one ``stat``) and at every new connection.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            identity = None
        except OSError as exc:
            raise self._unavailable(exc) from None
        else:
            identity = (st.st_dev, st.st_ino)
        if self._identity is None and identity is not None:
            self._identity = identity
            return
        if identity != self._identity:
            what = "removed" if identity is None else "replaced by another file"
            raise StateUnavailableError(
                f"{self.path}: the state file was {what} while this process had it open; "
                "nothing was written or read (writes to the old file would be lost, its reads "
                "stale). Put the file back, or restart the process to use the file now at that "
                "path"
            )

    def open_readonly(self) -> sqlite3.Connection:
        """A read-only connection without the usual pragmas, for inspecting a file before
        changing anything in it (journal mode included). The caller closes it."""
        try:
            conn = self._connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
            )
        except SQLITE_ERRORS as exc:
            raise StateUnavailableError(self._message(exc)) from None
        try:
            if self._on_connect is not None:
                self._on_connect(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _message(self, exc: BaseException) -> str:
        if is_damage(exc) and self.cipher is None:
            self.damage = sqlite_error_message(exc)
        return open_error_message(self.path, exc, self.cipher)

    def _noted(self, exc: BaseException) -> str:
        """The message for ``exc``; damage found by a read or write is remembered, so that
        readiness reports it (a quick check at every probe would cost too much)."""
        message = sqlite_error_message(exc)
        if is_damage(exc):
            self.damage = message
        return message

    def _unavailable(self, exc: BaseException) -> StateUnavailableError:
        return StateUnavailableError(f"{self.path}: {self._noted(exc)}")

    def _configure(self, conn: sqlite3.Connection) -> None:
        """The one place that sets pragmas. Runs outside any transaction."""
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateUnavailableError(
                    f"{self.path}: cannot switch the state file to WAL mode (got {mode!r})"
                )
            # FULL: the WAL is fsynced at every commit, so an acknowledged write survives power
            # loss. NORMAL: fsync only at checkpoints; survives process crashes, not power loss.
            conn.execute(f"PRAGMA synchronous={self.durability.upper()}")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        except SQLITE_ERRORS as exc:
            raise StateUnavailableError(self._message(exc)) from None

    def _thread_state(self) -> _ThreadState:
        if self._closed:
            raise StateUnavailableError(f"{self.path}: the state store is closed")
        state: _ThreadState | None = getattr(self._local, "state", None)
        pid = _Process.pid
        if state is not None and state.pid != pid:
            if state.depth:
                raise StateUnavailableError(
                    f"{self.path}: a transaction opened in process {state.pid} was continued "
                    f"in process {pid} after fork(); open the store again in the child"
                )
            _INHERITED.append(state.conn)
            state = None
        if state is None:
            state = _ThreadState(pid=pid, conn=self._open_connection())
            self._local.state = state
        return state

    def connection(self) -> sqlite3.Connection:
        """The connection this thread uses now: inside a write call, the process's writer
        connection; else its own read connection (opened on first use, per process). Outside
        a transaction, a read first checks that the path still names the file opened (one
        ``stat``): a removed or replaced file answers every read the same way, an error,
        instead of old data on threads that happen to hold a connection."""
        state = self._thread_state()
        if state.writing is not None:
            if not state.writing.in_transaction:
                raise self._rolled_back()
            return state.writing
        if not state.conn.in_transaction:
            self.check_same_file()
        return state.conn

    @property
    def queued_writers(self) -> int:
        """How many write calls of this process wait for the writer lock right now."""
        return len(self._queued)

    @property
    def in_transaction(self) -> bool:
        """True when the calling thread is inside :meth:`transaction`."""
        state: _ThreadState | None = getattr(self._local, "state", None)
        return bool(state and state.depth and state.pid == _Process.pid)

    # --- statements ----------------------------------------------------------------------

    @property
    def integrity_errors(self) -> tuple[type[BaseException], ...]:
        """The constraint-violation classes (looked up now: the driver may load later)."""
        return INTEGRITY_ERRORS

    def prepare_rows(self, table: str, columns: list[str], rows: list[Any]) -> list[Any]:
        """SQLite stores what it is given (booleans as 0/1 by the driver)."""
        return [tuple(r) for r in rows]

    def reset_identities(self) -> None:
        """Nothing to do: AUTOINCREMENT follows the largest id inserted."""

    def table_names(self) -> list[str]:
        """The state's tables, by name."""
        rows = self.query_all(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        return [str(r[0]) for r in rows]

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """Run one statement on this thread's connection, mapping SQLite errors."""
        conn = self.connection()
        try:
            return conn.execute(sql, params)
        except INTEGRITY_ERRORS:
            raise
        except SQLITE_ERRORS as exc:
            raise self._unavailable(exc) from None

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (a bulk insert), mapping SQLite errors."""
        conn = self.connection()
        try:
            conn.executemany(sql, rows)
        except INTEGRITY_ERRORS:
            raise
        except SQLITE_ERRORS as exc:
            raise self._unavailable(exc) from None

    def query_all(self, sql: str, params: Any = ()) -> list[Any]:
        """Run a query and fetch every row at once (never keep a cursor open: it pins the WAL)."""
        conn = self.connection()
        try:
            return conn.execute(sql, params).fetchall()
        except SQLITE_ERRORS as exc:
            raise self._unavailable(exc) from None

    def query_one(self, sql: str, params: Any = ()) -> Any:
        """Run a query and return its first row (or None), closing the cursor."""
        conn = self.connection()
        try:
            cur = conn.execute(sql, params)
            try:
                return cur.fetchone()
            finally:
                cur.close()
        except SQLITE_ERRORS as exc:
            raise self._unavailable(exc) from None

    # --- transactions --------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """One atomic write call; nested use becomes a SAVEPOINT.

        The outermost level queues on the in-process writer lock and runs on the writer
        connection: it opens a transaction (``BEGIN IMMEDIATE``) or, when other calls are
        committing together, joins theirs in a savepoint of its own. Any exception rolls this
        call back alone (to the savepoint, when nested) and propagates unchanged. On success it
        returns once the shared COMMIT succeeded and the queued on-commit work and commit hooks
        ran; a failed commit raises :class:`StateUnavailableError` in every call of the batch
        (nothing of it was written). ``durable=True`` fsyncs the commit even under
        ``durability="normal"`` (it commits alone): for a commit that a later step relies on
        being on disk (the legacy import, before the config file loses its dynamic keys).
        Nested inside a transaction it is an error.
        """
        state = self._thread_state()
        if state.depth:
            if durable and self.durability != "full":
                raise DapiConfigError("a durable transaction cannot be nested in another one")
            yield from self._savepoint(state)
            return
        if self._fork_poisoned:
            raise StateUnavailableError(
                f"{self.path}: this process was created by fork() while a write transaction "
                "of the parent was open, so SQLite's locks on the file were copied as held; "
                "open the store in the child only after the parent's writes finished "
                "(or start the child with spawn)"
            )
        if self.damage is not None:
            # Acknowledged into a damaged file, a write would be lost when the next start
            # recovers the file from a backup: refused until then.
            raise StateUnavailableError(
                f"{self.path}: {self.damage}; writes are refused until a restart recovers the "
                "file from the newest good backup (nothing was written)"
            )
        started = time.perf_counter()
        committed = False
        try:
            batch = yield from self._run_member(state, alone=durable and self.durability != "full")
            batch.wait()
            if batch.error is not None:
                raise StateUnavailableError(batch.error)
            committed = True
        finally:
            elapsed = time.perf_counter() - started
            for observer in self._transaction_observers:
                with contextlib.suppress(Exception):
                    observer(elapsed, committed)

    def _run_member(self, state: _ThreadState, *, alone: bool) -> Generator[None, None, _Batch]:
        """Run one write call's body under the writer lock, in the open batch or a new one.

        Returns the batch to wait for. Whoever releases the lock with nobody queued behind it
        (or with a full batch, or after a call that must commit alone) commits the batch.
        """
        self._queued.append(None)
        self._write_lock.acquire()
        self._queued.pop()
        self._writer = threading.get_ident()
        try:
            if alone and self._batch is not None:
                self._commit_batch()
            conn = self._writer_connection()
            batch = self._batch
            first = batch is None
            if batch is None:
                self.check_same_file()
                if alone:
                    # synchronous only changes outside a transaction; FULL makes this commit
                    # fsync the WAL. Set back after the commit (the finally below).
                    try:
                        conn.execute("PRAGMA synchronous=FULL")
                    except SQLITE_ERRORS as exc:
                        raise self._unavailable(exc) from None
                try:
                    self._begin(conn)
                except StateUnavailableError as exc:
                    if READ_ONLY_MESSAGE in exc.message:
                        self._retire_writer_connection()
                    raise
                batch = self._batch = _Batch()
            else:
                self._start_member(conn)
            state.writing, state.depth, state.on_commit = conn, 1, []
            try:
                yield
            except BaseException as exc:
                self._undo_member(conn, first=first, cause=exc)
                raise
            finally:
                state.writing, state.depth = None, 0
                work, state.on_commit = state.on_commit, []
            if not first:
                self._end_member(conn)
            batch.members += 1
            batch.on_commit.extend(work)
            return batch
        finally:
            try:
                open_batch = self._batch
                if open_batch is not None and (
                    alone or not self._queued or open_batch.members >= GROUP_COMMIT_MAX
                ):
                    self._commit_batch()
            finally:
                if alone and self._writer_conn is not None:
                    with contextlib.suppress(*SQLITE_ERRORS):
                        self._writer_conn.execute(f"PRAGMA synchronous={self.durability.upper()}")
                self._writer = None
                self._write_lock.release()

    def _writer_connection(self) -> sqlite3.Connection:
        conn = self._writer_conn
        if conn is None:
            self._restore_companion_modes()
            conn = self._writer_conn = self._open_connection()
        return conn

    def _restore_companion_modes(self) -> None:
        # SQLite gives an empty -wal the main file's mode whenever a connection opens it: a
        # state file chmod'ed 0400 for a moment leaves a read-only WAL behind, and writes would
        # keep failing after the operator restored the main file's mode. Ours to fix, 0600.
        if not os.access(self.path, os.W_OK):
            return
        for suffix in ("-wal", "-shm"):
            companion = f"{self.path}{suffix}"
            if os.path.exists(companion) and not os.access(companion, os.W_OK):
                with contextlib.suppress(OSError):
                    os.chmod(companion, 0o600)

    def _start_member(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(f"SAVEPOINT {_MEMBER_SAVEPOINT}")
        except SQLITE_ERRORS as exc:
            message = self._noted(exc)
            self._abort_batch(conn, message)
            raise StateUnavailableError(f"{self.path}: cannot start a write: {message}") from None

    def _end_member(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(f"RELEASE {_MEMBER_SAVEPOINT}")
        except SQLITE_ERRORS as exc:
            message = self._noted(exc)
            self._abort_batch(conn, message)
            raise StateUnavailableError(f"{self.path}: {message}; nothing was written") from None

    def _undo_member(self, conn: sqlite3.Connection, *, first: bool, cause: BaseException) -> None:
        """Roll back one call that raised: its savepoint, or the whole transaction when it was
        alone in it. When SQLite undid the whole transaction itself (some I/O and disk-full
        errors do), or the connection turned out read-only, the batch fails as a whole."""
        read_only = isinstance(cause, StateUnavailableError) and READ_ONLY_MESSAGE in cause.message
        if first:
            self._batch = None
            self._rollback(conn)
            self._turn.release()
        else:
            undone = False
            with contextlib.suppress(*SQLITE_ERRORS):
                conn.execute(f"ROLLBACK TO {_MEMBER_SAVEPOINT}")
                conn.execute(f"RELEASE {_MEMBER_SAVEPOINT}")
                undone = True
            if read_only or not undone or not conn.in_transaction:
                self._abort_batch(
                    conn, f"a write committed together with this one failed ({cause})"
                )
        if read_only:
            self._retire_writer_connection()

    def _abort_batch(self, conn: sqlite3.Connection, why: str) -> None:
        batch, self._batch = self._batch, None
        self._rollback(conn)
        self._turn.release()
        if batch is not None:
            batch.error = f"{self.path}: {why}; nothing was written"
            batch.finish()

    def _commit_batch(self) -> None:
        """COMMIT the open batch (under the writer lock), then run its post-commit work and
        the commit hooks, and tell its members."""
        batch, self._batch = self._batch, None
        conn = self._writer_conn
        if batch is None or conn is None:
            return
        try:
            try:
                conn.execute("COMMIT")
            except SQLITE_ERRORS as exc:
                self._rollback(conn)
                batch.error = f"{self.path}: commit failed, nothing was written: {self._noted(exc)}"
                if READ_ONLY_MESSAGE in batch.error:
                    self._retire_writer_connection()
                return
            finally:
                self._turn.release()  # the next process may write while we answer
            _failpoints.hit("commit.before_ack")
            for work in [*batch.on_commit, *self._commit_hooks]:
                try:
                    work()
                except Exception:
                    # Post-commit work (log lines, mirror file, metrics) must never turn a
                    # committed write into an error: the change is durable and the caller must
                    # hear so.
                    log.exception("post-commit work failed")
        finally:
            batch.finish()

    def _retire_writer_connection(self) -> None:
        # SQLite silently opens a connection read-only when the file is not writable at that
        # moment, and it stays read-only for good: without this, a long-lived process (the
        # server) would fail every write until a restart, even after the permissions are
        # fixed. The next write opens a fresh connection.
        conn, self._writer_conn = self._writer_conn, None
        if conn is None:
            return
        with self._all_lock:
            self._all = [(p, c) for p, c in self._all if c is not conn]
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        # Keep the object alive: its id() must not be reused by the next connection (the hot
        # cache keys its freshness on it).
        self._retired.append(conn)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read-only transaction: every read inside sees one committed state.

        Takes no write lock (WAL readers never block writers). Inside a write transaction it
        simply joins it.
        """
        state = self._thread_state()
        if state.depth or state.conn.in_transaction:
            yield
            return
        self.check_same_file()
        try:
            state.conn.execute("BEGIN")
        except SQLITE_ERRORS as exc:
            raise self._unavailable(exc) from None
        try:
            yield
        finally:
            self._rollback(state.conn)

    def _savepoint(self, state: _ThreadState) -> Iterator[None]:
        name = f"sp{state.depth}"
        conn = state.writing
        assert conn is not None  # nested in a write call
        if not conn.in_transaction:
            # A SAVEPOINT outside a transaction would open one of its own, which its RELEASE
            # would commit: never, once the shared transaction is gone.
            raise self._rolled_back()
        conn.execute(f"SAVEPOINT {name}")
        mark = len(state.on_commit)
        state.depth += 1
        try:
            yield
        except BaseException:
            del state.on_commit[mark:]
            with contextlib.suppress(*SQLITE_ERRORS):
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        finally:
            state.depth -= 1
        conn.execute(f"RELEASE {name}")

    def _begin(self, conn: sqlite3.Connection) -> None:
        # Our turn among processes first (woken by the kernel when it comes), then SQLite's
        # lock: busy_timeout covers BEGIN IMMEDIATE against writers that take no turn; the
        # loop is a backstop for the rare SQLITE_BUSY that SQLite returns without waiting
        # (e.g. while another process recovers the WAL).
        self._turn.acquire()
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except OPERATIONAL_ERRORS as exc:
                    busy = "locked" in str(exc) or "busy" in str(exc)
                    if busy and time.monotonic() < deadline:
                        time.sleep(0.01)
                        continue
                    raise StateUnavailableError(
                        f"{self.path}: cannot start a write: {self._noted(exc)}"
                    ) from None
        except BaseException:
            self._turn.release()  # no transaction began: the next process's turn
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(*SQLITE_ERRORS):
                conn.execute("ROLLBACK")

    def after_commit(self, work: Callable[[], None]) -> None:
        """Run ``work`` after the current outermost transaction commits (dropped on rollback)."""
        state = self._thread_state()
        if not state.depth:
            raise DapiConfigError("after_commit() called outside a transaction")
        state.on_commit.append(work)

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection this process opened (after committing calls that wait for
        a shared commit). Idempotent."""
        if (
            not self._closed
            and self._writer != threading.get_ident()
            and self._write_lock.acquire(timeout=BUSY_TIMEOUT_S)
        ):
            try:
                self._commit_batch()
                self._closed = True
            finally:
                self._write_lock.release()
        self._closed = True
        self._writer_conn = None
        self._turn.close()
        pid = os.getpid()
        with self._all_lock:
            conns, self._all = self._all, []
        for owner, conn in conns:
            if owner == pid:
                with contextlib.suppress(*SQLITE_ERRORS):
                    conn.close()
            else:
                _INHERITED.append(conn)
        self._local = threading.local()
        held, self._held = self._held, None
        if held is not None:
            _held_files.release(held)
