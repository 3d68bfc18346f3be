"""The PostgreSQL backend (SPEC §13): several replicas share one state.

:class:`PostgresStore` runs the statements every backend shares (:mod:`.queries`) on a
connection pool. What differs from SQLite, and why:

- **One writer at a time, across replicas.** Every write transaction first takes one
  transaction-scoped advisory lock (:data:`WRITE_LOCK`), so writes serialise as on SQLite's
  single writer. Audit revisions (an identity column) are therefore handed out in commit
  order: a poller following ``since=REV`` never sees 11 before 10 commits. No write is retried
  (a retry could repeat one that committed before the connection broke).
- **Hot reads** (height, node version) are cached and invalidated by ``LISTEN/NOTIFY``: every
  write transaction notifies :data:`CHANGES_CHANNEL` at commit; a listener thread drops the cache
  when a notice arrives. Until the listener is connected (at start, after PostgreSQL or the
  network dropped it) hot reads read through. Staleness bound: the notice's delivery time (well
  under a second on a healthy link); every other read is fresh.
- **Session settings** are made in one place, :meth:`PgDatabase._configure`: time zone UTC, the
  application name, timestamps read as text (as SQLite returns them), and the bounds below.
- **Every wait is bounded** by ``API_STATE_PG_TIMEOUT`` (default 10 s): connection attempts
  (``connect_timeout``), statements (``statement_timeout``) and lock waits (``lock_timeout``,
  the write lock included) on the server's side, TCP keepalives for a peer that vanished, and
  :class:`_Watchdog` for a server that stalls without closing anything (stopped, swapping): it
  cuts the connection of a call that has waited that long (a grace later), which fails at once
  with :class:`StateTimeoutError`. A commit whose connection is lost is reported as
  :class:`CommitUnknownError`: it may or may not have been stored.
- **Schema steps** are the same numbered steps as SQLite's, in PostgreSQL's DDL, applied under a
  session advisory lock (:data:`MIGRATION_LOCK`) so replicas starting at once do not race.
- **The master key** must come from ``API_STATE_KEY``: there is no directory for a key file.
- **Backups** are SQLite snapshot files (:mod:`.snapshot`) read in one consistent snapshot,
  kept by each replica in the backup directory it is given (``<config dir>/backups``); a
  restore loads one back in a single verified transaction.
- A password in the URL never appears in a message: :func:`redact_url` is all that is shown.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from dapi_config.errors import (
    CommitUnknownError,
    ConfigError,
    NotSupportedError,
    SchemaTooNewError,
    StateTimeoutError,
    StateUnavailableError,
)
from dapi_config.settings import DEFAULT_PG_TIMEOUT_S, PG_TIMEOUT_ENV, AuditRetention
from dapi_config.store import backup as _backup
from dapi_config.store.backup import BackupInfo
from dapi_config.store.connection import register_hook
from dapi_config.store.migrations import MIGRATIONS, Migration
from dapi_config.store.queries import HEIGHT, NODE_VERSION, StateQueries
from dapi_config.store.recovery import (
    CheckResult,
    RestoreResult,
    check_backups,
    check_schema_version,
)
from dapi_config.store.snapshot import (
    opened_backup,
    opened_scratch,
    read_snapshot,
    restore_from_backup,
    write_snapshot_file,
)

if TYPE_CHECKING:
    import psycopg

    from dapi_config.store.sqlcipher import StateCipher

log = logging.getLogger("dapi_config.state")

#: Advisory lock every write transaction takes first (one writer at a time, every replica).
WRITE_LOCK = 0x6461_7069_0001
#: Session advisory lock held while schema steps run.
MIGRATION_LOCK = 0x6461_7069_0002
#: ``NOTIFY`` channel of committed changes.
CHANGES_CHANNEL = "dapi_config_changes"
#: What opens and closes a write transaction (constants: no parameters, so each is one simple
#: query, one round trip). If the transaction failed, the notice fails and COMMIT never runs.
_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_NOTIFY_AND_COMMIT = f"SELECT pg_notify('{CHANGES_CHANNEL}', ''); COMMIT"
#: Seconds a read or write waits for a pooled connection before opening one of its own.
POOL_WAIT_S = 2.0
#: Seconds the watchdog leaves the server's own timeouts to end a statement cleanly first.
WATCHDOG_GRACE_S = 2.0
#: A pooled connection that answered everything it was asked this recently is handed out
#: without the pool's check (a round trip); if it is dead all the same (the server restarted
#: within that time), the unit of work takes another before anything ran on it.
FRESH_CONNECTION_S = 1.0
#: TCP keepalives: first probe after this many idle seconds, then every ``interval``, and
#: ``count`` unanswered probes close the connection (a peer gone without a word).
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 10, 5, 3


def redact_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = "&".join(
        "password=***" if item.lower().startswith("password=") else item
        for item in parts.query.split("&")
        if item
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _psycopg() -> Any:
    try:
        # An optional extra: imported only when a PostgreSQL state is used.
        import psycopg  # noqa: PLC0415
        import psycopg_pool  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigError(
            "API_STATE_URL names a PostgreSQL state, but psycopg is not installed: "
            "pip install 'dapi-config[postgres]'"
        ) from None
    return psycopg


def _message(url: str, exc: BaseException) -> str:
    """An error's text, safe to show after the (redacted) URL: the password never repeated."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace(urlsplit(url).password or "\0", "***")


@dataclass
class _Result:
    """A statement's outcome, fully read (the connection may go back to the pool)."""

    rowcount: int
    description: Any
    rows: list[Any]

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return list(self.rows)


@dataclass
class _ThreadState:
    conn: Any = None
    depth: int = 0
    writing: bool = False
    callbacks: list[Callable[[], None]] = field(default_factory=list)


class _Watchdog:
    """Cuts the connection under a call that has waited too long for the server.

    PostgreSQL's ``statement_timeout`` and ``lock_timeout`` end a slow statement cleanly, but a
    stalled server (SIGSTOP, swapping, a network that drops packets without a reset) enforces
    nothing and its kernel still acknowledges keepalives: the call would wait as long as the
    stall lasts. Each watched connection has a deadline, moved on by every statement; a daemon
    thread shuts down the socket of one past its deadline, so the blocked call fails at once
    and the connection is discarded."""

    TICK_S = 0.25

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self._lock = threading.Lock()
        self._due: dict[int, tuple[float, Any]] = {}
        self._fired: set[int] = set()
        self._thread: threading.Thread | None = None

    def watch(self, conn: Any) -> None:
        """Start (or move on) ``conn``'s deadline."""
        with self._lock:
            self._due[id(conn)] = (time.monotonic() + self.bound, conn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dapi-config-pg-watchdog", daemon=True
                )
                self._thread.start()

    def release(self, conn: Any) -> bool:
        """Stop watching ``conn``; True when its deadline passed and it was cut."""
        with self._lock:
            self._due.pop(id(conn), None)
            if id(conn) in self._fired:
                self._fired.discard(id(conn))
                return True
            return False

    def _run(self) -> None:
        # Ticks while anything is watched; ends when nothing is (the next watch restarts it).
        while True:
            time.sleep(self.TICK_S)
            now = time.monotonic()
            with self._lock:
                for key, (deadline, conn) in list(self._due.items()):
                    if deadline <= now:
                        del self._due[key]
                        self._fired.add(key)
                        _cut(conn)
                if not self._due:
                    self._thread = None
                    return


def _timed_out(exc: BaseException) -> bool:
    """True for a connection attempt that ran out of ``connect_timeout``."""
    timeout = getattr(_psycopg().errors, "ConnectionTimeout", ())
    return isinstance(exc, timeout) or "timeout expired" in str(exc)


def _dead(conn: Any) -> bool:
    return bool(conn.broken or conn.closed)


def _is_read(sql: str) -> bool:
    return sql.lstrip()[:6].upper() == "SELECT"


def _roll_back(conn: Any) -> None:
    """End ``conn``'s transaction without keeping anything (nothing when it is gone)."""
    if not _dead(conn):
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")


def _cut(conn: Any) -> None:
    """Shut the connection's socket down under whoever waits on it (they get an error)."""
    with contextlib.suppress(Exception):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class PgDatabase:
    """A pool of connections to one PostgreSQL database, with the transactions the shared
    statements expect (``?`` placeholders are translated here)."""

    def __init__(
        self, url: str, *, max_connections: int = 10, timeout: float = DEFAULT_PG_TIMEOUT_S
    ) -> None:
        """``timeout``: the bound on every connection attempt, statement and lock wait
        (``API_STATE_PG_TIMEOUT``)."""
        psycopg = _psycopg()
        self.url = url
        self.timeout = timeout
        self._watchdog = _Watchdog(timeout + WATCHDOG_GRACE_S)
        #: libpq's connection options: connect_timeout is whole seconds (at least 2).
        self._connect_kwargs: dict[str, Any] = {
            "connect_timeout": max(2, math.ceil(timeout)),
            "keepalives": 1,
            "keepalives_idle": KEEPALIVE_IDLE_S,
            "keepalives_interval": KEEPALIVE_INTERVAL_S,
            "keepalives_count": KEEPALIVE_COUNT,
        }
        #: What messages show: the URL without its password.
        self.path = redact_url(url)
        self.integrity_errors: tuple[type[BaseException], ...] = (psycopg.errors.IntegrityError,)
        self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self._local = threading.local()
        self._sql: dict[str, str] = {}
        #: When each pooled connection last answered all it was asked (see :meth:`_check`).
        self._answered: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._commit_hooks: list[Callable[[], None]] = []
        self._observers: list[Callable[[float, bool], None]] = []
        try:
            # One direct attempt first: a wrong host, port or password fails at once with the
            # server's reason (the pool would retry until its timeout).
            psycopg.connect(url, **self._connect_kwargs).close()
        except psycopg.Error as exc:
            raise StateUnavailableError(
                f"{self.path}: cannot connect to PostgreSQL: {_message(url, exc)}"
            ) from None
        self._max_connections = max_connections
        #: Set while the server is unreachable: every attempt then tries one direct connection
        #: (refused at once) instead of waiting on a pool that backs off between retries.
        self._down = False
        self._pool_lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> Any:
        from psycopg_pool import ConnectionPool  # noqa: PLC0415 - after _psycopg's check

        pool = ConnectionPool(
            self.url,
            # Autocommit: a lone read is one round trip (no BEGIN/COMMIT around it), and a write
            # transaction sends its own BEGIN with its first statement (see transaction()).
            kwargs={**self._connect_kwargs, "autocommit": True},
            min_size=1,
            max_size=self._max_connections,
            configure=self._configure,
            # A connection handed out is checked first: after a server restart the idle ones
            # are dead, and a write must not fail on one when a fresh one would work.
            check=self._check,
            timeout=self.timeout,
            open=False,
            name="dapi-config",
        )
        try:
            pool.open(wait=True, timeout=self.timeout)
        except Exception as exc:
            pool.close()
            raise StateUnavailableError(
                f"{self.path}: cannot connect to PostgreSQL: {_message(self.url, exc)}"
            ) from None
        return pool

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """The one place that sets session settings (each pooled connection, once)."""
        from psycopg.types.string import TextLoader  # noqa: PLC0415 - optional extra

        # Timestamps read as text, as SQLite returns them; stored and shown in UTC.
        for name in ("timestamp", "timestamptz", "date"):
            conn.adapters.register_loader(name, TextLoader)
        bound_ms = max(1, round(self.timeout * 1000))
        self._watchdog.watch(conn)
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute("SET application_name = 'dapi-config'")
            # A statement or a lock wait (the write lock too) longer than the bound fails.
            conn.execute(f"SET statement_timeout = {bound_ms}")
            conn.execute(f"SET lock_timeout = {bound_ms}")
            conn.commit()
        finally:
            self._watchdog.release(conn)

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check of a connection it hands out (an empty query), bounded; skipped
        for one that answered everything it was asked within :data:`FRESH_CONNECTION_S`
        (under load it was one round trip in eight of a ``set_height``). One that turns out
        dead all the same is replaced before anything ran on it (:meth:`_opened`)."""
        from psycopg_pool import ConnectionPool  # noqa: PLC0415 - after _psycopg's check

        if time.monotonic() - self._answered.pop(conn, -math.inf) < FRESH_CONNECTION_S:
            return
        self._watchdog.watch(conn)
        try:
            ConnectionPool.check_connection(conn)
        finally:
            self._watchdog.release(conn)

    # --- transactions --------------------------------------------------------------------

    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _ThreadState()
        return state

    @property
    def in_transaction(self) -> bool:
        state = self._state()
        return state.depth > 0 and state.writing

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        pool = self._pool
        conn: Any = None
        if not self._down:
            with contextlib.suppress(Exception):
                conn = pool.getconn(timeout=POOL_WAIT_S)
        if conn is None:
            # The pool is busy, or the server was unreachable (the pool then retries with
            # growing delays): one direct connection says at once whether it is there.
            try:
                direct = _psycopg().connect(self.url, autocommit=True, **self._connect_kwargs)
                self._configure(direct)
            except Exception as exc:
                self._down = True
                if _timed_out(exc):
                    raise self._timeout_error() from None
                raise StateUnavailableError(
                    f"{self.path}: PostgreSQL is not reachable: {_message(self.url, exc)}"
                ) from None
            if self._down:
                self._recovered()
            try:
                with self._watched(direct):
                    yield direct
            finally:
                direct.close()
            return
        try:
            with self._watched(conn):
                yield conn
            if not _dead(conn):
                self._answered[conn] = time.monotonic()
        finally:
            pool.putconn(conn)

    def _opened(self, conn: Any, sql: str, *, retry: bool) -> bool:
        """Run ``sql``, the statement (no parameters) that opens a unit of work on ``conn``.
        False when ``retry`` and the connection turned out dead before anything ran on it (a
        pooled one handed out unchecked, the server restarted since): take another. Any other
        failure raises, for the caller's :meth:`_mapped`."""
        try:
            conn.execute(sql)
        except _psycopg().OperationalError:
            if not retry or not _dead(conn):
                raise
            self._answered.clear()  # the other idle ones may be dead too: check them
            return False
        return True

    @contextlib.contextmanager
    def _watched(self, conn: Any) -> Iterator[None]:
        """Bound every wait on ``conn`` (see :class:`_Watchdog`); a call it cut raises
        :class:`StateTimeoutError` (or :class:`CommitUnknownError`, raised by the caller)."""
        self._watchdog.watch(conn)
        try:
            yield
        except StateUnavailableError as exc:
            if self._watchdog.release(conn) and not isinstance(exc, CommitUnknownError):
                raise self._timeout_error() from None
            raise
        finally:
            self._watchdog.release(conn)

    def _recovered(self) -> None:
        """The server answers again: a fresh pool (the old one may still be backing off)."""
        with self._pool_lock:
            if not self._down:
                return
            old, self._pool = self._pool, self._new_pool()
            self._down = False
        log.warning("%s: PostgreSQL is reachable again", self.path)
        old.close(timeout=0)

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """One write transaction (nested: a savepoint). Every commit is durable
        (``synchronous_commit`` stays on), so ``durable`` asks for nothing more."""
        state = self._state()
        if state.depth:
            if not state.writing:
                raise StateUnavailableError(f"{self.path}: a write inside a read snapshot")
            with self._mapped(), state.conn.transaction():
                state.depth += 1
                try:
                    yield
                finally:
                    state.depth -= 1
            return
        start = time.perf_counter()
        committed = committing = False
        callbacks: list[Callable[[], None]] = []
        try:
            for attempt in (1, 2):
                with self._connection() as conn:
                    # One round trip each: BEGIN with the writers' lock, the change notice with
                    # COMMIT (no parameters: sent as one simple query each).
                    with self._mapped():
                        if not self._opened(conn, _BEGIN_WRITE, retry=attempt == 1):
                            continue
                    state.conn, state.depth, state.writing = conn, 1, True
                    try:
                        outcome = self._commit_outcome(conn, lambda: committing)  # noqa: B023
                        with outcome, self._mapped():
                            try:
                                yield
                                self._watchdog.watch(conn)  # the commit gets the whole bound
                                committing = True
                                conn.execute(_NOTIFY_AND_COMMIT)
                            except BaseException:
                                _roll_back(conn)
                                raise
                        committed = True
                    finally:
                        callbacks = state.callbacks
                        state.conn, state.depth, state.writing = None, 0, False
                        state.callbacks = []
                        if conn.broken:
                            log.warning("%s: connection lost during a write", self.path)
                break
        finally:
            seconds = time.perf_counter() - start
            for observer in list(self._observers):
                _run_hook(lambda o=observer: o(seconds, committed))  # type: ignore[misc]
        if committed:
            for callback in [*callbacks, *self._commit_hooks]:
                _run_hook(callback)

    def _timeout_error(self) -> StateTimeoutError:
        return StateTimeoutError(
            f"{self.path}: PostgreSQL did not answer within {self.timeout:g} s "
            f"({PG_TIMEOUT_ENV}); the server or the network stalls. Nothing was written"
        )

    @contextlib.contextmanager
    def _commit_outcome(self, conn: Any, committing: Callable[[], bool]) -> Iterator[None]:
        """A failure once COMMIT was sent, with the connection gone, is not a plain failure:
        the server may have committed before the connection broke."""
        try:
            yield
        except StateUnavailableError:
            if committing() and (conn.broken or conn.closed):
                raise CommitUnknownError(
                    f"{self.path}: the connection to PostgreSQL was lost while the commit was "
                    "sent: the change may or may not be stored. Read the state back before "
                    "repeating the write"
                ) from None
            raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A consistent read (REPEATABLE READ, read only), or the caller's transaction."""
        state = self._state()
        if state.depth:
            state.depth += 1
            try:
                yield
            finally:
                state.depth -= 1
            return
        for attempt in (1, 2):
            with self._connection() as conn:
                with self._mapped():
                    if not self._opened(conn, _BEGIN_SNAPSHOT, retry=attempt == 1):
                        continue
                state.conn, state.depth, state.writing = conn, 1, False
                try:
                    with self._mapped():
                        yield
                finally:
                    state.conn, state.depth, state.writing = None, 0, False
                    _roll_back(conn)  # it only read: nothing to commit
            return

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        psycopg = _psycopg()
        try:
            yield
        except self.integrity_errors:
            raise
        except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
            # statement_timeout / lock_timeout: the server itself gave up waiting.
            raise StateTimeoutError(
                f"{self.path}: PostgreSQL did not finish within {self.timeout:g} s "
                f"({PG_TIMEOUT_ENV}): {_message(self.url, exc)}. Nothing was written"
            ) from None
        except self._errors as exc:
            raise StateUnavailableError(
                f"{self.path}: PostgreSQL: {_message(self.url, exc)}"
            ) from None

    def after_commit(self, callback: Callable[[], None]) -> None:
        state = self._state()
        if state.depth and state.writing:
            state.callbacks.append(callback)
        else:
            _run_hook(callback)

    def add_commit_hook(self, hook: Callable[[], None]) -> Callable[[], None]:
        return register_hook(self._commit_hooks, hook)

    def add_transaction_observer(
        self, observer: Callable[[float, bool], None]
    ) -> Callable[[], None]:
        return register_hook(self._observers, observer)

    # --- statements ----------------------------------------------------------------------

    def _translate(self, sql: str) -> str:
        translated = self._sql.get(sql)
        if translated is None:
            # The shared statements hold no '?' or '%' inside literals.
            translated = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return translated

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        state = self._state()
        if state.depth:
            return self._run(state.conn, sql, params)
        for attempt in (1, 2):
            # Autocommit: one statement, one round trip. A read on a connection that turned
            # out dead (handed out unchecked) is asked again on another.
            with self._connection() as conn, self._mapped():
                try:
                    return self._run_unmapped(conn, sql, params)
                except _psycopg().OperationalError:
                    if attempt == 2 or not _dead(conn) or not _is_read(sql):
                        raise
                    self._answered.clear()  # the other idle ones may be dead too: check them
        raise AssertionError("unreachable")

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (a bulk insert; psycopg pipelines it)."""
        state = self._state()
        if not state.depth:
            with self.transaction():
                self.executemany(sql, rows)
            return
        self._watchdog.watch(state.conn)
        with self._mapped(), state.conn.cursor() as cur:
            cur.executemany(self._translate(sql), [tuple(r) for r in rows])

    def _run(self, conn: Any, sql: str, params: Sequence[Any]) -> _Result:
        with self._mapped():
            return self._run_unmapped(conn, sql, params)

    def _run_unmapped(self, conn: Any, sql: str, params: Sequence[Any]) -> _Result:
        self._watchdog.watch(conn)  # each statement gets the whole bound
        cur = conn.execute(self._translate(sql), tuple(params))
        rows = cur.fetchall() if cur.description is not None else []
        description = None if cur.description is None else [(c.name,) for c in cur.description]
        return _Result(cur.rowcount, description, rows)

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def query_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()

    def table_names(self) -> list[str]:
        rows = self.query_all(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [str(r[0]) for r in rows]

    def prepare_rows(self, table: str, columns: list[str], rows: list[Any]) -> list[Any]:
        """Rows from either backend as PostgreSQL takes them: SQLite's 0/1 as booleans."""
        types = dict(
            self.query_all(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ?",
                (table,),
            )
        )
        booleans = [i for i, c in enumerate(columns) if types.get(c) == "boolean"]
        out = []
        for row in rows:
            values = list(row)
            for i in booleans:
                if values[i] is not None:
                    values[i] = bool(values[i])
            out.append(tuple(values))
        return out

    def reset_identities(self) -> None:
        """Each identity column's sequence continues after the largest id loaded."""
        for table, column in self.query_all(
            "SELECT table_name, column_name FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND is_identity = 'YES'"
        ):
            self.execute(
                f"SELECT setval(pg_get_serial_sequence(?, ?), "
                f'COALESCE((SELECT MAX("{column}") FROM "{table}"), 0) + 1, false)',
                (table, column),
            )

    def listen_connection(self) -> Any:
        """A new autocommit connection of its own (the change listener's), configured."""
        psycopg = _psycopg()
        conn = psycopg.connect(self.url, autocommit=True, **self._connect_kwargs)
        conn.execute("SET application_name = 'dapi-config listener'")
        return conn

    def close(self) -> None:
        self._pool.close()


def _run_hook(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:  # a failing hook never undoes a commit
        log.exception("commit hook failed")


#: The key of hot values kept only as the fallback for an unreachable server.
_STALE = (-1, -1)


class _ChangeListener:
    """``LISTEN`` on :data:`CHANGES_CHANNEL` in a daemon thread; ``generation`` grows with each
    notice (and each reconnect), ``healthy`` says whether notices can be trusted now."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self.generation = 0
        self.healthy = False
        self._stop = threading.Event()
        # Written to by stop(): wakes the thread at once from its wait on the socket.
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="dapi-config-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                conn = self._db.listen_connection()
            except Exception as exc:
                # Said once per outage, not at every retry.
                (log.debug if delay > 0.1 else log.warning)(
                    "change listener cannot connect (%s); hot reads read through", exc
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                self.generation += 1  # anything may have changed while we were away
                self.healthy = True
                delay = 0.1
                while not self._stop.is_set():
                    # Drain what arrived (queued ones first); a lost connection raises here.
                    for _ in conn.notifies(timeout=0, stop_after=10_000):
                        self.generation += 1
                    if conn.closed or conn.broken:
                        raise OSError("the listening connection closed")
                    ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], 5.0)
                    if self._wake_r in ready:
                        break
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("change listener lost its connection (%s); reconnecting", exc)
            finally:
                self.healthy = False
                self.generation += 1
                with contextlib.suppress(Exception):
                    conn.close()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class PostgresStore(StateQueries):
    """The dynamic state in one PostgreSQL database, shared by every replica."""

    db: PgDatabase
    supports_backups: ClassVar[bool] = True
    file_backed: ClassVar[bool] = False

    def __init__(
        self,
        db: PgDatabase,
        *,
        default_actor: str = "library",
        audit_retention: AuditRetention | None = None,
        backup_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.db = db
        super().__init__(default_actor=default_actor, audit_retention=audit_retention)
        self._backup_dir = None if backup_dir is None else Path(backup_dir)
        name = str(db.query_one("SELECT current_database()")[0])
        self._database_name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "state"
        self._hot_lock = threading.Lock()
        #: ((listener generation, local commits) when read, values); None: read through.
        self._hot: tuple[tuple[int, int], tuple[int, str]] | None = None
        self._local_commits = 0
        db.add_commit_hook(self._forget_hot)
        self._listener = _ChangeListener(db)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        default_actor: str = "library",
        audit_retention: AuditRetention | None = None,
        read_only: bool = False,
        max_connections: int = 10,
        backup_dir: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_PG_TIMEOUT_S,
    ) -> PostgresStore:
        """Connect, apply pending schema steps (not with ``read_only``: then a schema older
        than this code is an error) and start the change listener. ``backup_dir``: where this
        replica's SQLite snapshot files go (none: backups need an explicit ``out``).

        Raises :class:`StateUnavailableError` (unreachable, not a dapi-config database),
        :class:`SchemaTooNewError`, :class:`ConfigError` (psycopg missing)."""
        db = PgDatabase(url, max_connections=max_connections, timeout=timeout)
        try:
            _migrate(db, read_only=read_only)
            return cls(
                db,
                default_actor=default_actor,
                audit_retention=audit_retention,
                backup_dir=backup_dir,
            )
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self._listener.stop()
        self.db.close()

    # --- hot values ------------------------------------------------------------------------

    def _forget_hot(self) -> None:
        with self._hot_lock:
            self._local_commits += 1
            self._hot = None

    def hot_values(self) -> tuple[int, str]:
        """(height, node version): from memory while the listener vouches for it, else read.

        The cache is keyed by the listener's generation and this process's commit count as
        seen *before* the read, so a notice or a local commit that lands meanwhile makes the
        next read refresh again: a value is never older than the last notice received."""
        if self.db.in_transaction:
            return self._read_hot()
        listener = self._listener
        with self._hot_lock:
            key = (listener.generation, self._local_commits)
            hot = self._hot
        if listener.healthy and hot is not None and hot[0] == key:
            return hot[1]
        try:
            values = self._read_hot()
        except StateUnavailableError:
            if hot is None:
                raise
            # The server is unreachable: serve the last values read (writes fail meanwhile,
            # so nothing newer can have been acknowledged by this replica).
            return hot[1]
        with self._hot_lock:
            # Kept even while the listener is down: then it is only the fallback above.
            self._hot = (key, values) if listener.healthy else (_STALE, values)
        return values

    # --- backups: SQLite snapshot files (SPEC §13) ---------------------------------------

    @property
    def cipher(self) -> StateCipher | None:
        return None  # snapshot files are plain SQLite; the secrets in them stay sealed

    @property
    def backup_dir(self) -> Path:
        """Where this replica keeps backups of the shared state (``<config dir>/backups``)."""
        if self._backup_dir is None:
            raise NotSupportedError(
                f"{self.path}: no backup directory was given for this PostgreSQL state; "
                "open it through the config file (backups go beside it) or pass --out"
            )
        return self._backup_dir

    def _backup_name(self) -> Path:
        """What backup names and listings go by: ``<database name>-<time>-<reason>.db``."""
        return Path(f"{self._database_name}.db")

    def backup(self, out: str | os.PathLike[str] | None, *, reason: str) -> BackupInfo:
        """A verified SQLite snapshot file of the whole state, read in one consistent snapshot
        (writers on every replica go on meanwhile). It opens as a SQLite state of its own
        (secrets sealed under ``API_STATE_KEY``), and :meth:`restore_backup` reads it back."""
        return _backup.write_backup(
            self.path,
            lambda tmp: write_snapshot_file(read_snapshot(self), tmp),
            out=out,
            backup_dir=self.backup_dir if out is None else Path(out).parent,
            reason=reason,
            name_stem=self._database_name,
        )

    def backup_before(self, reason: str, *, keep: int) -> BackupInfo | None:
        """The automatic ``pre-<reason>`` backup, keeping ``keep`` of that reason; None when
        the state holds nothing yet, or when no backup directory was given (logged)."""
        if self.latest_revision() == 0:
            return None
        if self._backup_dir is None:
            log.info("%s: no backup directory given; no pre-%s backup", self.path, reason)
            return None
        tag = reason if reason.startswith("pre-") else f"pre-{reason}"
        info = self.backup(None, reason=tag)
        _backup.prune_backups(self.backup_dir, self._backup_name(), keep, reasons=[tag])
        return info

    def own_files(self) -> list[Path]:
        """This replica's backups (the state itself is on the server)."""
        if self._backup_dir is None:
            return []
        return [b.path for b in self.list_backups(verify=False)]

    def kept_backup(self, reason: str, *, keep: int) -> BackupInfo:
        """A backup in :attr:`backup_dir`, then the oldest beyond ``keep`` of that reason
        pruned (``keep`` < 1 keeps all)."""
        info = self.backup(None, reason=reason)
        _backup.prune_backups(self.backup_dir, self._backup_name(), keep, reasons=[reason])
        return info

    def list_backups(self, *, verify: bool = True) -> list[BackupInfo]:
        """This database's snapshot files in :attr:`backup_dir`, newest first, each checked
        (``verify``; else only named)."""
        return _backup.list_backups(self.backup_dir, self._backup_name(), verify=verify)

    def opened_backup(
        self, backup: str | os.PathLike[str]
    ) -> contextlib.AbstractContextManager[StateQueries]:
        """The state the snapshot file ``backup`` holds, to read (a restore's preview)."""
        return opened_backup(backup, work_dir=self.backup_dir, cipher=None)

    def opened_scratch(self) -> contextlib.AbstractContextManager[StateQueries]:
        """A new, empty private SQLite state to fill (see :func:`.snapshot.opened_scratch`)."""
        return opened_scratch(work_dir=self.backup_dir, cipher=None)

    def restore_backup(self, backup: str | os.PathLike[str]) -> RestoreResult:
        """Make the snapshot file ``backup`` (made by :meth:`backup`, or any SQLite state file
        whose secrets ``API_STATE_KEY`` opens) the shared state, in one transaction that keeps
        the audit trail, after a ``pre-restore`` backup (see
        :func:`.snapshot.restore_from_backup`). Every replica sees the restored state at its
        next read. Raises :class:`BackupError` (missing or damaged file; nothing changed),
        :class:`SchemaTooNewError`."""
        return restore_from_backup(
            self,
            backup,
            work_dir=self.backup_dir,  # the pre-restore backup goes there: refuse early without
            cipher=None,
            backup_before=lambda: self.backup_before("restore", keep=0),
        )

    def check(self, *, max_backup_age: float | None = None) -> CheckResult:
        """The server reachable, the schema version, and the backups in :attr:`backup_dir`
        (modes, the newest good one and its age). Changes nothing."""
        result = CheckResult(self.path)
        result.items["backend"] = "postgresql"
        try:
            version = self.schema_version()
        except StateUnavailableError as exc:
            result.items["server"] = "unreachable"
            result.problems.append(str(exc))
            version = -1
        else:
            result.items["server"] = "reachable"
        check_schema_version(result, self.path, version)
        check_backups(result, self.backup_dir, self._backup_name(), max_backup_age=max_backup_age)
        return result

    def schema_version(self) -> int:
        return _schema_version(self.db)


# --- schema steps ----------------------------------------------------------------------------


def _schema_version(db: PgDatabase) -> int:
    exists = db.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL")[0]
    if not exists:
        return 0
    return int(db.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0])


def _migrate(db: PgDatabase, *, read_only: bool) -> None:
    latest = MIGRATIONS[-1].version
    current = _schema_version(db)
    if current > latest:
        raise SchemaTooNewError(db.path, current, latest)
    if current == latest:
        return
    if read_only:
        raise StateUnavailableError(
            f"{db.path}: its schema (version {current}) is older than this dapi-config's "
            f"({latest}); the service or a command that writes upgrades it. It was not changed"
        )
    with db._connection() as conn, db._mapped():  # autocommit: the session lock holds
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            # Under the lock: a replica that started at the same moment may have created
            # the schema since the version was read above; its tables are not foreign.
            _refuse_a_foreign_database(db)
            for step in MIGRATIONS:
                _apply(conn, step)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def _refuse_a_foreign_database(db: PgDatabase) -> None:
    if _schema_version(db) != 0:
        return
    foreign = [t for t in db.table_names() if t != "schema_migrations"]
    if foreign:
        raise StateUnavailableError(
            f"{db.path}: this database holds other tables ({', '.join(foreign[:5])}) and "
            "no dapi-config schema; give dapi-config a database of its own. Nothing changed"
        )


class _PgStepSql:
    """A migration step's statements (``?`` placeholders) on a psycopg connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(_pg(sql), params).fetchall())

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        self._conn.execute(_pg(sql), params)


def _pg(sql: str) -> str:
    """``sql`` with ``?`` placeholders in psycopg's ``%s`` style."""
    return sql.replace("%", "%%").replace("?", "%s")


def _apply(conn: Any, step: Migration) -> None:
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
        if exists:
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %s", (step.version,)
            ).fetchone()
            if done:
                return  # another replica applied it while we waited for the lock
        log.info("applying state schema step %d (PostgreSQL): %s", step.version, step.name)
        conn.execute(step.postgres_script)
        if step.backfill is not None:
            step.backfill(_PgStepSql(conn))
        conn.execute(
            "INSERT INTO schema_migrations(version, name, applied_at) VALUES (%s, %s, %s)",
            (step.version, step.name, time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())),
        )


__all__ = [
    "CHANGES_CHANNEL",
    "HEIGHT",
    "NODE_VERSION",
    "PgDatabase",
    "PostgresStore",
    "redact_url",
]
