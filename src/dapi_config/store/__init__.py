"""The state store: the only package that speaks SQL.

- :mod:`.backend` the contract the manager needs (a core, and the capabilities a backend may
  add), and the names every backend shares;
- :mod:`.queries` every statement on state and audit rows, in the SQL both backends share;
- :mod:`.sqlite` the SQLite state file (:class:`SqliteStore`) over :mod:`.connection`
  (connections, pragmas, transactions);
- :mod:`.postgres` the PostgreSQL state (:class:`~.postgres.PostgresStore`);
- :mod:`.migrations` the numbered schema steps, in both dialects;
- :mod:`.snapshot` a whole state as rows (copies, backups of PostgreSQL, restores);
- :mod:`.backup`, :mod:`.recovery` backups and what is done with a damaged file;
- :mod:`.sqlcipher`, :mod:`.encrypt_file` the optional whole-file encryption;
- :mod:`.gonka_db` the later predecessor's own SQLite file, read and written back.
"""

from typing import TYPE_CHECKING

from dapi_config._lazy import lazy_exports

#: Where each public name lives: imported when first asked for, so a module that needs only
#: the contract (:mod:`.backend`: the catalogue, the CLI's commands) does not load the SQLite
#: store, its statements, backups and recovery.
_EXPORTS = {
    "AuditEntry": "dapi_config.store.backend",
    "StateBackend": "dapi_config.store.backend",
    "Database": "dapi_config.store.connection",
    "Durability": "dapi_config.store.connection",
    "audit_digest": "dapi_config.store.queries",
    "SqliteStore": "dapi_config.store.sqlite",
    "StateStore": "dapi_config.store.sqlite",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from dapi_config.store.backend import AuditEntry, StateBackend
    from dapi_config.store.connection import Database, Durability
    from dapi_config.store.queries import audit_digest
    from dapi_config.store.sqlite import SqliteStore, StateStore

__all__ = [
    "AuditEntry",
    "Database",
    "Durability",
    "SqliteStore",
    "StateBackend",
    "StateStore",
    "audit_digest",
]
