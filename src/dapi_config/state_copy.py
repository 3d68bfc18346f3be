"""Moving a whole state between backends (SPEC §13): ``dapi-config state copy SRC DST``, and
the SQLite snapshot files that back up a PostgreSQL state.

A copy reads the source in one consistent snapshot and writes the target in one durable
transaction that also checks the result (rows per table, the latest audit revision) before it
commits, so a target is either untouched or a verified copy. Sealed secrets are copied as they
are when the target's master key opens them (the same ``API_STATE_KEY`` on both sides); when
it does not (a SQLite file sealed under its key file, copied to PostgreSQL, which needs
``API_STATE_KEY``), each is opened with the source's key and sealed again under the target's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dapi_config.crypto import (
    WORKER_KEY_SECRET,
    KeyParams,
    MasterKeySource,
    SecretBox,
    is_sealed,
    security_key_context,
)
from dapi_config.errors import ConfigError, MasterKeyError
from dapi_config.settings import Settings, is_state_url
from dapi_config.store.backend import StateBackend, auth_token_context
from dapi_config.store.postgres import PostgresStore, redact_url
from dapi_config.store.queries import KEY_PARAMS_SECRET
from dapi_config.store.snapshot import Tables, read_snapshot, write_snapshot
from dapi_config.store.sqlite import SqliteStore

log = logging.getLogger("dapi_config.state")

Location = Path | str


@dataclass
class CopyReport:
    """What a copy did: rows per table, the audit revision, whether secrets were re-sealed."""

    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    revision: int = 0
    resealed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def location_of(value: str | os.PathLike[str]) -> Location:
    """A ``postgresql://`` URL stays text; anything else is a state file path."""
    text = os.fspath(value)
    return text if is_state_url(text) else Path(text)


def _shown(location: Location) -> str:
    return redact_url(location) if isinstance(location, str) else str(location)


def _open(
    location: Location, settings: Settings, *, read_only: bool, backup_dir: Path | None = None
) -> SqliteStore | PostgresStore:
    if isinstance(location, str):
        return PostgresStore.open(
            location, read_only=read_only, backup_dir=backup_dir, timeout=settings.pg_timeout
        )
    if read_only and not location.is_file():
        raise ConfigError(f"{location}: no state file here; nothing was copied")
    return SqliteStore.open(location, read_only=read_only, audit_retention=settings.audit_retention)


def _same_file(a: Location, b: Location) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _keys(location: Location, settings: Settings) -> MasterKeySource:
    return MasterKeySource(location, settings.state_key, shared=isinstance(location, str))


def copy_state(
    source: Location,
    target: Location,
    settings: Settings,
    *,
    force: bool = False,
    before_replace: Callable[[StateBackend], None] | None = None,
    backup_dir: Path | None = None,
) -> CopyReport:
    """Copy the whole state at ``source`` to ``target`` (each a file path or a URL).

    A target that holds state is refused unless ``force`` (then ``before_replace(target)``
    runs first, e.g. a backup; ``backup_dir`` is where a PostgreSQL target keeps its backups).
    Raises :class:`ConfigError` (missing source, non-empty target,
    same place), :class:`MasterKeyError` (the source's secrets cannot be opened),
    :class:`StateUnavailableError`. On any error the target is unchanged.
    """
    if _shown(source) == _shown(target) or (
        isinstance(source, Path)
        and isinstance(target, Path)
        and source.resolve() == target.resolve()
    ):
        raise ConfigError(f"{_shown(source)}: source and target are the same state")
    src = _open(source, settings, read_only=True)
    try:
        snapshot = read_snapshot(src)
    finally:
        src.close()
    dst = _open(target, settings, read_only=False, backup_dir=backup_dir)
    try:
        occupied = {t: n for t, n in dst.row_counts().items() if n}
        if occupied and not force:
            raise ConfigError(
                f"{_shown(target)} already holds state ({', '.join(sorted(occupied))}); "
                "nothing was copied. Pass --force to replace it (it is backed up first)"
            )
        if occupied and before_replace is not None:
            before_replace(dst)
        target_keys = _keys(target, settings)
        resealed = _reseal_if_needed(snapshot.tables, source, target_keys, settings)
        dst.use_chain_key(target_keys.chain_key)
        write_snapshot(dst, snapshot, where=_shown(target), rechain=True)
    finally:
        dst.close()
    counts, revision = snapshot.counts, snapshot.revision
    log.warning(
        "state copied from %s to %s (%d rows, revision %d%s)",
        _shown(source),
        _shown(target),
        sum(counts.values()),
        revision,
        ", secrets re-sealed under the target's master key" if resealed else "",
    )
    return CopyReport(_shown(source), _shown(target), counts, revision, resealed)


# --- secrets ---------------------------------------------------------------------------------


def _reseal_if_needed(
    tables: Tables, source_location: Location, target: MasterKeySource, settings: Settings
) -> bool:
    """Re-seal every secret in ``tables`` when the target's key cannot open them as they are.
    Returns whether it did."""
    columns, rows = tables["secrets"]
    name_at, value_at = columns.index("name"), columns.index("value")
    params_row = next((r for r in rows if r[name_at] == KEY_PARAMS_SECRET), None)
    if params_row is None:
        return False  # no secret was ever stored
    params = KeyParams.from_json(str(params_row[value_at]), "the source state")
    try:
        target.box(params)
        return False  # the same master key on both sides: copy as they are
    except MasterKeyError:
        pass
    # The source's key is where its secrets say: API_STATE_KEY, or the source's key file.
    source = MasterKeySource(
        source_location,
        settings.state_key if params.source == "env" else None,
        shared=isinstance(source_location, str),
    )
    old_box, _ = source.box(params)  # MasterKeyError: the source's own key is missing/wrong
    new_box, made = target.box(None)
    assert made is not None
    _reseal(tables, old_box, new_box, made)
    return True


def _reseal(tables: Tables, old: SecretBox, new: SecretBox, made: KeyParams) -> None:
    def again(value: str, context: str) -> str:
        return new.seal(old.open(value, context), context) if is_sealed(value) else value

    def rows_of(table: str) -> tuple[list[str], list[list[Any]]]:
        columns, rows = tables[table]
        fresh = [list(r) for r in rows]
        tables[table] = (columns, fresh)
        return columns, fresh

    columns, rows = rows_of("secrets")
    name, value = columns.index("name"), columns.index("value")
    for row in rows:
        if row[name] == KEY_PARAMS_SECRET:
            row[value] = made.to_json()
        elif row[name] == WORKER_KEY_SECRET:
            record = json.loads(row[value])
            record["private"] = again(record["private"], WORKER_KEY_SECRET)
            row[value] = json.dumps(record)
        else:
            row[value] = again(str(row[value]), str(row[name]))
    columns, rows = rows_of("mlnode_security")
    node, key, version = (columns.index(c) for c in ("node_id", "security_key", "key_version"))
    for row in rows:
        row[key] = again(row[key], security_key_context(row[node], int(row[version])))
    columns, rows = rows_of("inference_nodes")
    node_id, token = columns.index("id"), columns.index("auth_token")
    for row in rows:
        if row[token]:
            row[token] = again(row[token], auth_token_context(row[node_id]))
    columns, rows = rows_of("bls_dealer_openings")
    at = {c: columns.index(c) for c in columns}
    for row in rows:
        where = (
            f"bls_dealer_opening:{int(row[at['epoch_id']]) % 2**64}:"
            f"{row[at['recipient_index']]}:{row[at['ciphertext_index']]}"
        )
        row[at["share_bytes"]] = again(row[at["share_bytes"]], f"{where}:share")
        row[at["seed"]] = again(row[at["seed"]], f"{where}:seed")
