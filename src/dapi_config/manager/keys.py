"""Secrets: the master key, the worker key, per-node security keys."""

from __future__ import annotations

from dapi_config import legacy
from dapi_config._validation import (
    check_node_id,
)
from dapi_config.errors import (
    NotSupportedError,
)
from dapi_config.manager._base import ManagerBase
from dapi_config.models import (
    IssuedSecurityKey,
    SecurityKeyInfo,
)


class SecretsAndKeys(ManagerBase):
    """The master key, the worker key and per-node security keys (SPEC §11; the work is
    :mod:`dapi_config.secrets`')."""

    def seal_secrets(self) -> legacy.SealReport:
        """Move ``worker_private`` (with its public key) and ``chain_node.KeyringPassword``
        from the config file into sealed state: the file is backed up first, the secrets are
        stored in one durable transaction, then the file is rewritten without them.
        Raises :class:`ConfigError`, :class:`MasterKeyError`, :class:`NotSupportedError`
        (``yaml`` mode keeps them in its file for the old binary)."""
        if self._database is None:
            raise NotSupportedError(
                "API_STATE_MODE=yaml keeps the secrets in its file, where the old binary reads "
                "them; switch to db (or dual) mode to seal them"
            )
        report = legacy.seal_file_secrets(self._loaded.path, self._secrets.seal)
        if "ml_node_key_config.worker_private" in report.sealed:
            # This process still holds the values read at open: the stored pair serves now.
            self._loaded.config.ml_node_key_config.worker_private = ""
        return report

    def create_worker_key(self) -> str:
        """Generate a new Ed25519 worker pair, store it in the state file; return the public key.

        The private key is stored encrypted under the master key; the pair never goes to the
        YAML file (except in ``API_STATE_MODE=yaml``, where that file is the predecessor's
        single file and holds the pair as the old binary expects). :meth:`get_ml_node_key_config`
        returns it unless the YAML file sets its own keys. Raises :class:`MasterKeyError` when
        the master key does not open this file.
        """
        return self._secrets.create_worker_key()

    def check_master_key(self) -> str:
        """Check that the master key opens this state file's secrets; returns where it comes
        from (``API_STATE_KEY`` or the key file). The service calls it at start-up.

        Raises :class:`MasterKeyError` (wrong or missing key; nothing changed).
        """
        return self._secrets.check_master_key()

    def master_key_problem(self) -> str | None:
        """What the next start would meet with the master key (its key file deleted), or
        None. Cheap: readiness asks it at every probe."""
        return self._secrets.key_problem()

    def create_security_key(self, node_id: str) -> IssuedSecurityKey:
        """Create the first security key of a node (version 1) and return it in full, the
        only time besides rotation that the key is shown.

        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyExistsError` (rotate instead),
        :class:`MasterKeyError`.
        """
        return self._secrets.issue_security_key(check_node_id(node_id), rotate=False)

    def rotate_security_key(self, node_id: str) -> IssuedSecurityKey:
        """Replace a node's security key with a new one (``key_version`` + 1) and return it in
        full; the old key stops verifying at once.

        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyNotFoundError` (create first),
        :class:`MasterKeyError`.
        """
        return self._secrets.issue_security_key(check_node_id(node_id), rotate=True)

    def delete_security_key(self, node_id: str) -> SecurityKeyInfo:
        """Revoke a node's security key; returns what it was (without the key).

        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyNotFoundError`.
        """
        return self._secrets.delete_security_key(check_node_id(node_id))

    def get_security_key_info(self, node_id: str) -> SecurityKeyInfo:
        """A node's key version, timestamps and fingerprint; never the key itself.

        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyNotFoundError`,
        :class:`MasterKeyError`.
        """
        return self._secrets.security_key_info(check_node_id(node_id))

    def get_security_keys(self) -> list[SecurityKeyInfo]:
        """Info (no keys) for every node that has a security key, in registration order."""
        return self._secrets.security_keys()

    def verify_security_key(self, node_id: str, key: str) -> bool:
        """True when ``key`` is the node's current security key (constant-time comparison).

        False for an old (rotated) key, an unknown node or a node without a key.
        Raises :class:`MasterKeyError`.
        """
        if not isinstance(node_id, str) or not isinstance(key, str):
            return False
        return self._secrets.verify_security_key(node_id, key)
