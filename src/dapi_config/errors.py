"""The one exception tree of dapi-config.

Every error a caller can see derives from :class:`DapiConfigError` and carries a message an
operator can act on. Surfaces (HTTP, CLI) map these classes to status codes and exit codes in one
place each.

::

    DapiConfigError
    ├── ConfigError (ValueError)            bad static config file, env var or legacy file
    │   └── MasterKeyError                  API_STATE_KEY / key file missing, short or wrong
    ├── ValidationError (ValueError)        a bad value passed to a write; names the field
    ├── DuplicateNodeError                  node id already in the registry / twice in a batch
    ├── NodeNotFoundError (KeyError)        no node with that id
    ├── SecurityKeyExistsError              the node already has a security key (rotate it)
    ├── SecurityKeyNotFoundError (KeyError) the node has no security key (create one)
    ├── PreconditionFailedError             optimistic concurrency: stale ETag / revision
    ├── BackupError                         a backup cannot be made, read or restored
    ├── HistoryUnavailableError             the state at a revision cannot be rebuilt
    ├── RevisionNotFoundError (KeyError)    no such audit revision (yet)
    ├── ListenError                         the service cannot listen on its address
    └── StateUnavailableError               the state file cannot be used right now
        ├── NotSupportedError               this state backend cannot do that (yaml mode)
        ├── SchemaTooNewError               the file was written by a newer dapi-config
        └── StateCorruptError               integrity check failed and no recovery was possible
"""

from __future__ import annotations

from typing import Any


class DapiConfigError(Exception):
    """Base class of every error raised by dapi-config."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(DapiConfigError, ValueError):
    """The static configuration (a YAML file, an env var, a legacy file) is not usable.

    The message names the source (file or env var), the key and what was expected.
    """

    code = "config_error"


class MasterKeyError(ConfigError):
    """The master key that encrypts secrets at rest is unusable: ``API_STATE_KEY`` too short,
    the key file missing or damaged, or a key that does not open this state file's secrets.

    Nothing was changed. The message never contains key material.
    """

    code = "master_key_error"


class ValidationError(DapiConfigError, ValueError):
    """A value passed to a write is invalid; nothing was written.

    ``errors`` lists ``{"field": "a.b", "message": "..."}`` items, one per problem.
    """

    code = "validation_error"

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[dict[str, Any]] = errors or []

    @property
    def field(self) -> str | None:
        """The first offending field, dotted (``models.qwen.args``), if known."""
        return self.errors[0]["field"] if self.errors else None


class DuplicateNodeError(DapiConfigError):
    """A node id is already registered (or appears twice in one batch)."""

    code = "duplicate_node"

    def __init__(self, node_id: str, message: str | None = None) -> None:
        super().__init__(message or f"node {node_id!r} already exists")
        self.node_id = node_id


class NodeNotFoundError(DapiConfigError, KeyError):
    """No node with the given id is registered."""

    code = "node_not_found"

    def __init__(self, node_id: str) -> None:
        super().__init__(f"node {node_id!r} not found")
        self.node_id = node_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class SecurityKeyExistsError(DapiConfigError):
    """The node already has a security key: rotate it instead of creating one."""

    code = "security_key_exists"

    def __init__(self, node_id: str) -> None:
        super().__init__(f"node {node_id!r} already has a security key; rotate it instead")
        self.node_id = node_id


class SecurityKeyNotFoundError(DapiConfigError, KeyError):
    """The node has no security key yet: create one first."""

    code = "security_key_not_found"

    def __init__(self, node_id: str) -> None:
        super().__init__(f"node {node_id!r} has no security key; create one first")
        self.node_id = node_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class TokenExistsError(DapiConfigError):
    """An API token of that name exists: revoke it first, or choose another name."""

    code = "token_exists"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"an API token named {name!r} exists; revoke it first or pick another name"
        )
        self.name = name


class TokenNotFoundError(DapiConfigError, KeyError):
    """No API token has that name (``dapi-config tokens list`` shows them)."""

    code = "token_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no API token named {name!r} (dapi-config tokens list shows them)")
        self.name = name

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class PreconditionFailedError(DapiConfigError):
    """The caller's view (ETag) is stale: someone else changed the object first."""

    code = "precondition_failed"


class HistoryUnavailableError(DapiConfigError):
    """The state as it was at a revision cannot be rebuilt from the trail and the backups
    (the retention cut the rows it needs, or a value was too large to keep and no backup was
    taken after it). Nothing was changed; the message says which revision is missing."""

    code = "history_unavailable"


class RevisionNotFoundError(DapiConfigError, KeyError):
    """An audit revision that does not exist yet (after the latest one)."""

    code = "revision_not_found"

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class BackupError(DapiConfigError):
    """A backup could not be written, or a backup file is missing or damaged.

    Nothing was changed: a failed backup leaves no file behind, a refused restore leaves the
    state file as it was.
    """

    code = "backup_error"


class StateUnavailableError(DapiConfigError):
    """The state database cannot be read or written (locked, full disk, I/O error, ...).

    A failed write changed nothing; reads of the last committed state may still work.
    """

    code = "state_unavailable"


class StateTimeoutError(StateUnavailableError):
    """The state database did not answer within its bound (``API_STATE_PG_TIMEOUT``): a
    stalled server or network. Nothing was committed; retry once it answers again."""

    code = "state_timeout"


class CommitUnknownError(StateUnavailableError):
    """The connection to the database was lost after the commit was sent: the change may or
    may not be stored. Read the state back before repeating the write."""

    code = "commit_outcome_unknown"


class NotSupportedError(StateUnavailableError):
    """The state backend in use cannot do this (``API_STATE_MODE=yaml`` has no database: no
    backups, audit queries or per-node keys). The message names the mode and what to use."""

    code = "not_supported"


class ListenError(DapiConfigError):
    """The service cannot listen on its address (port in use, no permission, bad host)."""

    code = "listen_error"


class SchemaTooNewError(StateUnavailableError):
    """The state file's schema is newer than this version of dapi-config understands."""

    code = "schema_too_new"

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: state schema version {found} is newer than this dapi-config supports "
            f"({supported}); upgrade dapi-config or restore a backup made by this version. "
            "The file was not changed."
        )
        self.found = found
        self.supported = supported


class StateCorruptError(StateUnavailableError):
    """The state file failed its integrity check and could not be recovered automatically."""

    code = "state_corrupt"
