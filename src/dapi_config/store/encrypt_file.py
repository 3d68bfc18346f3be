"""Converting the state file between plain and SQLCipher-encrypted, in place and safely.

:func:`encrypt_state`, :func:`decrypt_state` and :func:`rekey_state` (the ``dapi-config
encrypt|decrypt|rekey`` commands) all take one path:

1. Refuse unless the file is in the expected mode, opens with the given key, is a dapi-config
   state file of a known schema and passes ``quick_check``.
2. Check out every other connection: ``wal_checkpoint(TRUNCATE)``, then switch the file to
   rollback-journal mode (which folds the WAL in and deletes ``-wal``/``-shm``; SQLite refuses it
   while any other connection has the file open -- a running service -- and so do we), then take
   an exclusive lock held until the end (``locking_mode=EXCLUSIVE``): nobody reads or writes the
   file while it is converted.
3. Backup first: a byte copy of the now self-contained file (no writer can hold it) into
   ``<state dir>/backups/`` as ``pre-<operation>``, verified like any backup.
4. Build a NEW file beside it (created 0600): ``ATTACH ... KEY``, ``sqlcipher_export()``, then
   the header fields the export does not copy (``user_version``, ``application_id``).
5. Verify the new file through a fresh connection with the new key: ``integrity_check``
   (plus ``cipher_integrity_check`` when encrypted), application id, schema version, the row
   count of every table and the newest audit revision. fsync it.
6. Atomic rename over the original, fsync the directory. The ``<state>.encrypted`` marker is
   written before the swap of ``encrypt``/``rekey`` and removed after the swap of ``decrypt``.
7. A ``post-<operation>`` backup in the new mode, so recovery has a backup it can read at once.

``API_STATE_KEY`` also derives the master key that seals individual secrets (:mod:`..security`).
When a conversion changes where that master key comes from -- ``encrypt`` of a file whose secrets
were sealed under the key file, ``rekey`` of secrets sealed under the old ``API_STATE_KEY`` --
every sealed secret is re-sealed under the new master key inside the export transaction (each
value opened with the old key first: a key that does not open them stops the conversion before
anything changes), so the secrets stay readable with the settings the service runs with after.

A failure before the rename leaves the original file as it was (only its journal mode changed,
which the next open switches back); the partial new file is deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dapi_config._files import (
    atomic_write,
    copy_file,
    fsync_directory,
    fsync_file,
    make_durable_dir,
    remove_with_companions,
    stage_verified,
)
from dapi_config.crypto import (
    WORKER_KEY_SECRET,
    KeyParams,
    MasterKeySource,
    is_sealed,
    security_key_context,
)
from dapi_config.errors import (
    BackupError,
    DapiConfigError,
    SchemaTooNewError,
    StateCorruptError,
    StateUnavailableError,
)
from dapi_config.settings import STATE_KEY_ENV
from dapi_config.store import connection
from dapi_config.store import sqlcipher as _cipher
from dapi_config.store.backup import (
    BackupInfo,
    backup_dir_for,
    backup_name,
    create_backup,
    inspect_backup,
)
from dapi_config.store.connection import (
    APPLICATION_ID,
    create_private_file,
    is_not_a_database,
    sqlite_error_message,
)
from dapi_config.store.migrations import LATEST_VERSION
from dapi_config.store.recovery import exclusive_claim, staged_path
from dapi_config.store.sqlcipher import StateCipher
from dapi_config.store.sqlite import KEY_PARAMS_SECRET

log = logging.getLogger("dapi_config.encryption")

Operation = Literal["encrypt", "decrypt", "rekey"]
#: How long to wait for another connection to let go before refusing (seconds).
LOCK_WAIT_S = 2.0
_ATTACHED = "converted"


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion did: the backup taken first, what was verified, the new backup."""

    operation: Operation
    state_path: Path
    #: The verified copy of the file as it was (readable in the old mode).
    backup: BackupInfo
    #: Row count of every table, equal in the old and the new file.
    rows: dict[str, int]
    #: The newest audit revision, equal in both files.
    revision: int
    #: A backup of the converted file (None when it could not be made; logged).
    after: BackupInfo | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "operation": self.operation,
            "state_path": str(self.state_path),
            "encrypted": self.operation != "decrypt",
            "backup": self.backup.to_dict(),
            "rows": dict(self.rows),
            "revision": self.revision,
            "after": None if self.after is None else self.after.to_dict(),
        }


def encrypt_state(
    state_path: str | os.PathLike[str],
    secret: str,
    *,
    backup_dir: str | os.PathLike[str] | None = None,
) -> ConversionResult:
    """Encrypt a plain state file in place with the key derived from ``secret`` (the value of
    ``API_STATE_KEY`` the service will run with; see the module doc for the steps).

    Raises :class:`ConfigError` (driver not installed), :class:`StateUnavailableError` (file
    missing, already encrypted, open in another process, cannot be written),
    :class:`StateCorruptError` / :class:`SchemaTooNewError` (not a sound state file of this
    version), :class:`BackupError` (the backup first failed), :class:`MasterKeyError` (the
    sealed secrets cannot be opened to re-seal them). Nothing changed on any error.
    """
    key = StateCipher.from_secret(secret)
    return _convert(Path(state_path), None, key, "encrypt", backup_dir, _Secrets(None, secret))


def decrypt_state(
    state_path: str | os.PathLike[str],
    secret: str,
    *,
    backup_dir: str | os.PathLike[str] | None = None,
) -> ConversionResult:
    """Turn an encrypted state file back into a plain SQLite file (``secret``: the current
    ``API_STATE_KEY``, which keeps sealing the secrets). Raises as :func:`encrypt_state` (and
    :class:`StateUnavailableError` for a wrong key)."""
    key = StateCipher.from_secret(secret)
    return _convert(Path(state_path), key, None, "decrypt", backup_dir, _Secrets(secret, secret))


def rekey_state(
    state_path: str | os.PathLike[str],
    old_secret: str,
    new_secret: str,
    *,
    backup_dir: str | os.PathLike[str] | None = None,
) -> ConversionResult:
    """Re-encrypt an encrypted state file from ``old_secret`` to ``new_secret`` (and re-seal the
    secrets sealed under the old ``API_STATE_KEY``). Raises as :func:`decrypt_state`; the same
    key twice is a :class:`StateUnavailableError`."""
    old = StateCipher.from_secret(old_secret, source=f"the current {STATE_KEY_ENV}")
    new = StateCipher.from_secret(new_secret, source="the new key")
    if old == new:
        raise StateUnavailableError(
            f"{state_path}: the new key is the same as the current one; nothing was changed"
        )
    return _convert(
        Path(state_path), old, new, "rekey", backup_dir, _Secrets(old_secret, new_secret)
    )


@dataclass(frozen=True)
class _Secrets:
    """``API_STATE_KEY`` before and after the conversion (None: unset before, so the secrets
    may be sealed under the key file)."""

    before: str | None = field(repr=False)
    after: str = field(repr=False)


# --- the conversion ---------------------------------------------------------------------------


def _check_mode(state: Path, source: StateCipher | None, op: Operation) -> None:
    try:
        size = state.stat().st_size
    except FileNotFoundError:
        raise StateUnavailableError(f"{state}: no state file to {op}") from None
    except OSError as exc:
        raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
    if size == 0:
        raise StateUnavailableError(f"{state}: the state file is empty; nothing to {op}")
    if staged_path(state).exists():
        raise StateUnavailableError(
            f"{state}: an interrupted restore is pending ({staged_path(state)}); run "
            "`dapi-config recover` first. Nothing was changed"
        )
    plain = _cipher.has_plain_header(state)
    if source is None and not plain:
        raise StateUnavailableError(
            f"{state} is not a plain SQLite file (already encrypted?); nothing to encrypt. "
            "Nothing was changed"
        )
    if source is not None and plain:
        raise StateUnavailableError(
            f"{state} is not encrypted; nothing to {op} (use `dapi-config encrypt`). "
            "Nothing was changed"
        )


def _open_source(state: Path, source: StateCipher | None) -> Any:
    """A driver connection to the file to convert (the same library for every connection of
    this operation: two SQLite copies in one process do not see each other's locks)."""
    driver = _cipher.require_driver()
    try:
        conn = driver.connect(str(state), timeout=LOCK_WAIT_S, isolation_level=None)
    except connection.SQLITE_ERRORS as exc:
        raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
    try:
        if source is not None:
            source.apply(conn)
        conn.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_S * 1000)}")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except connection.SQLITE_ERRORS as exc:
        conn.close()
        if is_not_a_database(exc):
            message = _cipher.unreadable_message(state, source)
            raise StateUnavailableError(message or f"{state}: {exc}") from None
        raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_sound(conn: Any, state: Path) -> tuple[int, int]:
    """(application_id, user_version) after refusing a foreign, too-new or damaged file."""
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if app_id != APPLICATION_ID:
        raise StateCorruptError(
            f"{state}: not a dapi-config state file (application_id {app_id:#x}); "
            "nothing was changed"
        )
    if version > LATEST_VERSION:
        raise SchemaTooNewError(str(state), version, LATEST_VERSION)
    rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
    if rows != ["ok"]:
        raise StateCorruptError(
            f"{state} fails its integrity check ({'; '.join(rows[:3])}); run "
            "`dapi-config check` / `dapi-config recover` first. Nothing was changed"
        )
    return app_id, version


def _take_exclusive(conn: Any, state: Path) -> None:
    """Fold the WAL in, drop WAL mode and hold an exclusive lock until ``conn`` closes.

    Refuses (StateUnavailableError) while any other connection has the file open.
    """
    busy_message = (
        f"{state} is open in another process (is `dapi-config serve` running?); stop every "
        "process using it and retry. Nothing was changed"
    )
    try:
        busy = int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        if busy:
            raise StateUnavailableError(busy_message)
        mode = str(conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]).lower()
        if mode != "delete":
            raise StateUnavailableError(busy_message)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
    except connection.SQLITE_ERRORS as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise StateUnavailableError(busy_message) from None
        raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
    for suffix in ("-wal", "-shm", "-journal"):
        if Path(f"{state}{suffix}").exists():
            raise StateUnavailableError(busy_message)


def _table_rows(conn: Any, schema: str = "main") -> dict[str, int]:
    names = [
        str(r[0])
        for r in conn.execute(
            f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
    ]
    # Names come from the file's own catalogue; quoted as identifiers.
    return {
        name: int(
            conn.execute(
                f'SELECT COUNT(*) FROM {schema}."{name.replace(chr(34), chr(34) * 2)}"'
            ).fetchone()[0]
        )
        for name in names
    }


def _revision(conn: Any) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(revision), 0) FROM audit_log").fetchone()[0])


def _backup_copy(
    state: Path, backups: Path, op: Operation, source: StateCipher | None, revision: int
) -> BackupInfo:
    """The backup first: a byte copy of the locked, self-contained file, verified."""
    when = datetime.now(UTC)
    target = backups / backup_name(state, f"pre-{op}", when)

    def verified(tmp: Path) -> BackupInfo:
        checked = inspect_backup(tmp, cipher=source)
        if not checked.ok or checked.revision != revision:
            raise BackupError(
                f"the backup of {state} before {op} failed its check "
                f"({checked.problem or 'revision mismatch'}); nothing was changed"
            )
        return checked

    try:
        make_durable_dir(backups)
        info = stage_verified(target, lambda tmp: copy_file(state, tmp), verified)
    except OSError as exc:
        raise BackupError(
            f"cannot write the backup before {op} in {backups}: {sqlite_error_message(exc)}; "
            "nothing was changed"
        ) from None
    log.info("backup of %s before %s written to %s", state, op, target)
    return BackupInfo(target, when, info.size, info.schema_version, revision, f"pre-{op}")


def _reseal(conn: Any, state: Path, secrets: _Secrets) -> int:
    """Re-seal every sealed secret in the attached copy when the master key's source changes;
    returns how many values were re-sealed (0: nothing to do)."""
    row = conn.execute(
        f"SELECT value FROM {_ATTACHED}.secrets WHERE name = ?", (KEY_PARAMS_SECRET,)
    ).fetchone()
    if row is None:
        return 0  # no secret was ever sealed in this file
    params = KeyParams.from_json(str(row[0]), str(state))
    before = secrets.before if params.source == "env" else None
    if params.source == "env" and before == secrets.after:
        return 0  # sealed under API_STATE_KEY, which does not change
    old_box, _ = MasterKeySource(state, before).box(params)
    new_box, new_params = MasterKeySource(state, secrets.after).box(None)
    assert new_params is not None  # box(None) always makes new parameters

    def again(token: str, context: str) -> str:
        sealed = new_box.seal(old_box.open(token, context), context)
        new_box.open(sealed, context)  # proves the new value opens before it is written
        return sealed

    count = 0
    for node_id, token, version in conn.execute(
        f"SELECT node_id, security_key, key_version FROM {_ATTACHED}.mlnode_security"
    ).fetchall():
        conn.execute(
            f"UPDATE {_ATTACHED}.mlnode_security SET security_key = ? WHERE node_id = ?",
            (again(str(token), security_key_context(str(node_id), int(version))), node_id),
        )
        count += 1
    for name, value in conn.execute(
        f"SELECT name, value FROM {_ATTACHED}.secrets WHERE name != ?", (KEY_PARAMS_SECRET,)
    ).fetchall():
        resealed = _reseal_value(str(name), str(value), again)
        if resealed is not None:
            conn.execute(
                f"UPDATE {_ATTACHED}.secrets SET value = ? WHERE name = ?", (resealed, name)
            )
            count += 1
    conn.execute(
        f"UPDATE {_ATTACHED}.secrets SET value = ? WHERE name = ?",
        (new_params.to_json(), KEY_PARAMS_SECRET),
    )
    log.info("re-sealed %d secret(s) of %s under the new master key", count, state)
    return count


def _reseal_value(name: str, value: str, again: Callable[[str, str], str]) -> str | None:
    """A secrets row re-sealed (None: nothing sealed in it). A row is a sealed value itself or
    a JSON object with sealed fields (the worker key pair); its context is the row name."""
    if is_sealed(value):
        return again(value, name)
    if name != WORKER_KEY_SECRET:
        return None
    try:
        record = json.loads(value)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    changed = False
    for field_name, field_value in record.items():
        if isinstance(field_value, str) and is_sealed(field_value):
            record[field_name] = again(field_value, name)
            changed = True
    return json.dumps(record) if changed else None


def _export(
    conn: Any,
    new: Path,
    target: StateCipher | None,
    header: tuple[int, int],
    reseal: Callable[[Any], int],
) -> None:
    app_id, version = header
    key = "" if target is None else f"x'{target.raw_key.hex()}'"
    conn.execute(f"ATTACH DATABASE ? AS {_ATTACHED} KEY ?", (str(new), key))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"SELECT sqlcipher_export('{_ATTACHED}')")
            # Header fields that sqlcipher_export() does not copy.
            conn.execute(f"PRAGMA {_ATTACHED}.user_version = {int(version)}")
            conn.execute(f"PRAGMA {_ATTACHED}.application_id = {int(app_id)}")
            reseal(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(*connection.SQLITE_ERRORS):
                conn.execute("ROLLBACK")
            raise
    finally:
        with contextlib.suppress(*connection.SQLITE_ERRORS):
            conn.execute(f"DETACH DATABASE {_ATTACHED}")


def _verify(
    new: Path,
    target: StateCipher | None,
    *,
    app_id: int,
    version: int,
    rows: dict[str, int],
    revision: int,
) -> None:
    """Open the new file fresh, with the new key, and compare it with the source."""
    if _cipher.has_plain_header(new) != (target is None):
        raise StateUnavailableError(f"{new}: the converted file is not in the expected mode")
    conn = _cipher.connect(str(new), target, isolation_level=None)
    try:
        problems: list[str] = []
        check = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if check != ["ok"]:
            problems.append("integrity_check: " + "; ".join(check[:3]))
        if target is not None:
            bad_pages = conn.execute("PRAGMA cipher_integrity_check").fetchall()
            if bad_pages:
                problems.append(f"cipher_integrity_check: {bad_pages[:3]}")
        if int(conn.execute("PRAGMA application_id").fetchone()[0]) != app_id:
            problems.append("application_id differs")
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) != version:
            problems.append("schema version differs")
        copied = _table_rows(conn)
        if copied != rows:
            problems.append(f"row counts differ ({copied} != {rows})")
        if _revision(conn) != revision:
            problems.append("newest audit revision differs")
    finally:
        conn.close()
    if problems:
        raise StateUnavailableError(
            f"the converted copy of the state failed verification ({'; '.join(problems)}); "
            "the state file was not changed"
        )


@contextlib.contextmanager
def _closing(conn: Any) -> Iterator[Any]:
    try:
        yield conn
    finally:
        with contextlib.suppress(*connection.SQLITE_ERRORS):
            conn.close()


def _convert(  # noqa: PLR0917 - private, with one caller per operation
    state: Path,
    source: StateCipher | None,
    target: StateCipher | None,
    op: Operation,
    backup_dir: str | os.PathLike[str] | None,
    secrets: _Secrets,
) -> ConversionResult:
    backups = Path(backup_dir) if backup_dir is not None else backup_dir_for(state)
    _cipher.require_driver()
    _check_mode(state, source, op)
    marker = _cipher.marker_path(state)
    new = state.with_name(f".{state.name}.{op}.{os.getpid()}.tmp")
    with exclusive_claim(state, op), _closing(_open_source(state, source)) as conn:
        try:
            app_id, version = _check_sound(conn, state)
        except connection.SQLITE_ERRORS as exc:
            raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
        _take_exclusive(conn, state)
        try:
            rows = _table_rows(conn)
            revision = _revision(conn)
        except connection.SQLITE_ERRORS as exc:
            raise StateUnavailableError(f"{state}: {sqlite_error_message(exc)}") from None
        pre = _backup_copy(state, backups, op, source, revision)
        marker_written = False
        swapped = False
        try:
            remove_with_companions(new)
            create_private_file(new)
            _export(conn, new, target, (app_id, version), lambda c: _reseal(c, state, secrets))
            _verify(new, target, app_id=app_id, version=version, rows=rows, revision=revision)
            os.chmod(new, 0o600)
            fsync_file(new)
            if target is not None and not marker.exists():
                atomic_write(marker, _cipher.MARKER_TEXT)
                marker_written = True
            os.replace(new, state)
            swapped = True
            fsync_directory(state.parent)
        except connection.SQLITE_ERRORS as exc:
            raise StateUnavailableError(
                f"{state}: {op} failed, the state file was not changed: {sqlite_error_message(exc)}"
            ) from None
        except OSError as exc:
            raise StateUnavailableError(
                f"{state}: {op} failed, the state file was not changed: {sqlite_error_message(exc)}"
            ) from None
        finally:
            if not swapped:
                remove_with_companions(new)
                if marker_written:
                    with contextlib.suppress(OSError):
                        marker.unlink()
    # The lock on the old (now unlinked) file is released; the new file is in place.
    if target is None:
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
            fsync_directory(state.parent)
    log.info(
        "state file %s: %s done (%d tables, revision %d verified); previous file backed up to %s",
        state,
        op,
        len(rows),
        revision,
        pre.path,
    )
    try:
        after = create_backup(state, backup_dir=backups, reason=f"post-{op}", cipher=target)
    except DapiConfigError as exc:
        log.warning("the %s succeeded but the backup after it failed: %s", op, exc)
        after = None
    return ConversionResult(op, state, pre, rows, revision, after)
