"""The state store: the only package that speaks SQL.

- :mod:`.connection` opens the file, sets pragmas, hands out per-thread/per-process connections
  and runs transactions;
- :mod:`.migrations` holds the numbered schema steps;
- :mod:`.sqlite` holds every statement on state and audit rows (:class:`StateStore`).
"""

from dapi_config.store.backend import AuditEntry, StateBackend
from dapi_config.store.connection import Database, Durability
from dapi_config.store.sqlite import StateStore

__all__ = ["AuditEntry", "Database", "Durability", "StateBackend", "StateStore"]
