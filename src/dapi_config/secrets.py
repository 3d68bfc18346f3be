"""The secrets the state keeps (SPEC §11): the worker key pair and the per-node security
keys, sealed under the master key, stored through the backend.

:class:`Secrets` works on any :class:`~dapi_config.store.backend.StateCore`: it seals and
opens with the master key (:class:`~dapi_config.crypto.MasterKeySource`) and leaves storage
to the backend, which may decline (``API_STATE_MODE=yaml`` keeps the worker key in clear for
the old binary and has no per-node keys). The crypto itself lives in :mod:`dapi_config.crypto`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from dapi_config.crypto import (
    WORKER_KEY_SECRET,
    KeyParams,
    MasterKeySource,
    SecretBox,
    fingerprint,
    generate_security_key,
    generate_worker_key,
    is_sealed,
    keys_equal,
    security_key_context,
)
from dapi_config.errors import (
    MasterKeyError,
    NodeNotFoundError,
    SecurityKeyExistsError,
    SecurityKeyNotFoundError,
    ValidationError,
)
from dapi_config.models import (
    REDACTED,
    InferenceNodeConfig,
    IssuedSecurityKey,
    MLNodeKeyConfig,
    SecurityKeyInfo,
)
from dapi_config.store.backend import (
    SealedSecrets,
    SealedToken,
    Sealer,
    SecurityKeyRow,
    StateCore,
    auth_token_context,
)

#: The row holding the keyring password that ``secrets seal`` moved out of the YAML file.
KEYRING_PASSWORD_SECRET = "keyring_password"  # noqa: S105 - a row name


def keep_redacted_tokens(
    nodes: list[InferenceNodeConfig],
    store: StateCore,
    current: Mapping[str, InferenceNodeConfig | None] | None = None,
) -> list[InferenceNodeConfig]:
    """``nodes`` with every ``auth_token`` given as ``<redacted>`` (what reads show) replaced
    by the token stored for that node, so a read-modify-write keeps it. ``current``: the
    stored nodes the caller read already, by id (None: not stored), so they are not read
    again. Call inside the write transaction. Raises :class:`ValidationError` when the node
    has no stored token."""
    out: list[InferenceNodeConfig] = []
    for node in nodes:
        token = node.auth_token
        if (
            token is not None
            and not isinstance(token, SealedToken)
            and token.get_secret_value() == REDACTED
        ):
            if current is not None and node.id in current:
                held = current[node.id]
                stored = None if held is None else held.auth_token
            else:
                try:
                    stored = store.node(node.id).auth_token
                except NodeNotFoundError:
                    stored = None
            if stored is None:
                raise ValidationError(
                    f"node {node.id!r}: auth_token {REDACTED!r} stands for the stored "
                    "token and this node has none; give the token itself",
                    [{"field": "auth_token", "message": "no stored token to keep"}],
                )
            node = node.model_copy(update={"auth_token": stored})  # noqa: PLW2901
        out.append(node)
    return out


def has_new_token(nodes: list[InferenceNodeConfig]) -> bool:
    """True when a write of ``nodes`` will seal a token (so the master key is needed)."""
    return any(
        n.auth_token is not None and not isinstance(n.auth_token, SealedToken) for n in nodes
    )


class _BoxSealer:
    def __init__(self, secrets: Secrets) -> None:
        self._secrets = secrets

    def seal(self, plaintext: str, context: str) -> str:
        return self._secrets.box().seal(plaintext, context)

    def open(self, token: str, context: str) -> str:
        return self._secrets.box().open(token, context)


class Secrets:
    """Sealed secrets of one state backend, under one master key."""

    def __init__(
        self,
        store: StateCore,
        keys: MasterKeySource,
        *,
        sealed: SealedSecrets | None,
        lacking: Callable[[type], Exception],
    ) -> None:
        self._store = store
        #: Where sealed secrets are kept (None: nowhere, e.g. the predecessor's YAML file,
        #: which holds the worker key in clear for the old binary).
        self._sealed_store = sealed
        self._lacking = lacking
        self._keys = keys

    @property
    def _sealed(self) -> SealedSecrets:
        if self._sealed_store is None:
            raise self._lacking(SealedSecrets)
        return self._sealed_store

    # --- the master key ------------------------------------------------------------------

    def _key_params(self) -> KeyParams | None:
        if self._sealed_store is None:
            return None  # nothing sealed here
        raw = self._sealed_store.key_params()
        return None if raw is None else KeyParams.from_json(raw, self._store.path)

    def box(self) -> SecretBox:
        """The box for this file's secrets. When none is stored yet, new master-key
        parameters are recorded, so call it inside the write transaction of the first secret.
        Raises :class:`MasterKeyError`."""
        box, made = self._keys.box(self._key_params())
        if made is not None:
            if not self._store.in_transaction:
                raise MasterKeyError(
                    f"{self._store.path}: no secret has been stored yet; nothing to decrypt"
                )
            self._sealed.set_key_params(made.to_json())
        return box

    def warm(self) -> None:
        """Derive the master key (scrypt: tens of ms) before a write takes the writer lock,
        not while holding it."""
        if self._key_params() is not None:
            self.box()

    def check_master_key(self) -> str:
        """Where the master key comes from, after checking that it opens the stored secrets.
        Raises :class:`MasterKeyError` (wrong or missing key; nothing changed)."""
        if self._key_params() is not None:
            self.box()
            return self._keys.description
        # Nothing sealed yet: say so rather than vouch for a key file that does not exist.
        return f"{self._keys.description} (no secret is stored yet; it is used from the first)"

    def key_problem(self) -> str | None:
        """Why the next start could not open the stored secrets (a deleted key file), or None."""
        params = self._key_params()
        return None if params is None else self._keys.missing_key_file(params)

    def seal_node_tokens(self, nodes: list[InferenceNodeConfig]) -> list[InferenceNodeConfig]:
        """``nodes`` with each token given in clear sealed here (a :class:`SealedToken`), so
        the store writes the ciphertext as it is and never calls back to seal. Call inside the
        write transaction (the first secret records the master key's parameters). Raises
        :class:`MasterKeyError`."""
        if not has_new_token(nodes):
            return nodes
        box, sealer = self.box(), self.sealer()
        out = []
        for node in nodes:
            token = node.auth_token
            if token is not None and not isinstance(token, SealedToken):
                context = auth_token_context(node.id)
                sealed = SealedToken(box.seal(token.get_secret_value(), context), context, sealer)
                node = node.model_copy(update={"auth_token": sealed})  # noqa: PLW2901
            out.append(node)
        return out

    def sealer(self) -> Sealer:
        """What the backend seals node auth tokens with: this file's master key (the first
        seal records the key's parameters, so it must run inside the write transaction)."""
        return _BoxSealer(self)

    # --- the worker key ------------------------------------------------------------------

    def stored_worker_record(self) -> dict[str, str] | None:
        """The stored pair as recorded (the private key possibly sealed), or None."""
        raw = self._store.secret(WORKER_KEY_SECRET)
        return None if raw is None else dict(json.loads(raw))

    def stored_worker_key(self) -> dict[str, str] | None:
        """The stored pair with the private key opened, or None."""
        record = self.stored_worker_record()
        if record is None:
            return None
        private = record["private"]
        if is_sealed(private):
            private = self.box().open(private, WORKER_KEY_SECRET)
        return {"public": record["public"], "private": private}

    def create_worker_key(self) -> str:
        """Generate and store a new Ed25519 worker pair in one transaction; returns the public
        key. Raises :class:`MasterKeyError`."""
        pair = generate_worker_key()
        self.warm()
        with self._store.transaction():
            self._store.set_worker_key(
                pair.public,
                pair.private,
                fingerprint=fingerprint(pair.private),
                seal=lambda plain, context: self.box().seal(plain, context),
            )
        return pair.public

    def store_worker_key(self, public: str, private: str) -> None:
        """Store a worker pair sealed, inside the caller's write transaction."""
        self._store.set_worker_key(
            public,
            private,
            fingerprint=fingerprint(private),
            seal=lambda plain, context: self.box().seal(plain, context),
        )

    def seal(self, worker: tuple[str, str] | None, keyring_password: str | None) -> None:
        """Store a worker pair (public, private) and/or the keyring password sealed, in one
        durable transaction (the caller then removes them from the YAML file). Raises
        :class:`MasterKeyError`, :class:`NotSupportedError` (``yaml`` mode)."""
        self.warm()
        with self._store.transaction(durable=True):
            if worker is not None:
                self._store.set_worker_key(
                    worker[0],
                    worker[1],
                    fingerprint=fingerprint(worker[1]),
                    seal=lambda plain, context: self.box().seal(plain, context),
                )
            if keyring_password is not None:
                old = self._store.secret(KEYRING_PASSWORD_SECRET)
                self._sealed.set_secret(
                    KEYRING_PASSWORD_SECRET,
                    self.box().seal(keyring_password, KEYRING_PASSWORD_SECRET),
                    fingerprint=fingerprint(keyring_password),
                    old_fingerprint=None if old is None else "<replaced>",
                )

    def stored_keyring_password(self) -> str | None:
        """The keyring password sealed by ``secrets seal``, opened (None when none)."""
        sealed = self._store.secret(KEYRING_PASSWORD_SECRET)
        return None if sealed is None else self.box().open(sealed, KEYRING_PASSWORD_SECRET)

    def worker_keys(self, static: MLNodeKeyConfig, *, include_secrets: bool) -> MLNodeKeyConfig:
        """The pair an export shows: the YAML values where set, else the stored pair; the
        private key redacted unless ``include_secrets`` (redacted exports never decrypt, so
        they work without the master key)."""
        config = static.model_copy(deep=True)
        if include_secrets:
            if not (config.worker_public and config.worker_private):
                stored = self.stored_worker_key()
                if stored is not None:
                    config.worker_public = config.worker_public or stored["public"]
                    config.worker_private = config.worker_private or stored["private"]
            return config
        record = self.stored_worker_record()
        if record is not None:
            config.worker_public = config.worker_public or record["public"]
            config.worker_private = config.worker_private or "stored"
        if config.worker_private:
            config.worker_private = REDACTED
        return config

    # --- per-node security keys ----------------------------------------------------------

    def key_fingerprint(self, row: SecurityKeyRow) -> str:
        """The fingerprint of the sealed key ``row`` holds (opened, never returned)."""
        return self._info(row, self.box()).fingerprint

    def _info(self, row: SecurityKeyRow, box: SecretBox) -> SecurityKeyInfo:
        key = box.open(row.sealed, security_key_context(row.node_id, row.key_version))
        return SecurityKeyInfo(
            node_id=row.node_id,
            key_version=row.key_version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            fingerprint=fingerprint(key),
        )

    def issue_security_key(self, node_id: str, *, rotate: bool) -> IssuedSecurityKey:
        """Create (version 1) or rotate (version + 1) a node's key; the key is returned in
        full, the only time it is shown. Raises :class:`NodeNotFoundError`,
        :class:`SecurityKeyExistsError` / :class:`SecurityKeyNotFoundError`,
        :class:`MasterKeyError`."""
        key = generate_security_key()
        new_fp = fingerprint(key)
        self.warm()
        with self._store.transaction():
            self._store.node(node_id)
            old = self._sealed.security_key(node_id)
            if rotate and old is None:
                raise SecurityKeyNotFoundError(node_id)
            if not rotate and old is not None:
                raise SecurityKeyExistsError(node_id)
            box = self.box()
            version = 1 if old is None else old.key_version + 1
            row = self._sealed.put_security_key(
                node_id,
                box.seal(key, security_key_context(node_id, version)),
                version,
                fingerprint=new_fp,
                old_fingerprint=None if old is None else self._info(old, box).fingerprint,
            )
        return IssuedSecurityKey(
            node_id=node_id,
            key_version=row.key_version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            fingerprint=new_fp,
            security_key=key,
        )

    def delete_security_key(self, node_id: str) -> SecurityKeyInfo:
        """Revoke a node's key; returns what it was (without the key).
        Raises :class:`NodeNotFoundError`, :class:`SecurityKeyNotFoundError`."""
        self.warm()
        with self._store.transaction():
            self._store.node(node_id)
            row = self._sealed.security_key(node_id)
            if row is None:
                raise SecurityKeyNotFoundError(node_id)
            info = self._info(row, self.box())
            self._sealed.delete_security_key(node_id, old_fingerprint=info.fingerprint)
        return info

    def security_key_info(self, node_id: str) -> SecurityKeyInfo:
        """A node's key version, timestamps and fingerprint. Raises
        :class:`NodeNotFoundError`, :class:`SecurityKeyNotFoundError`, :class:`MasterKeyError`."""
        with self._store.snapshot():
            self._store.node(node_id)
            row = self._sealed.security_key(node_id)
        if row is None:
            raise SecurityKeyNotFoundError(node_id)
        return self._info(row, self.box())

    def security_keys(self) -> list[SecurityKeyInfo]:
        """Info (no keys) for every node that has a key, in registration order."""
        rows = self._sealed.security_keys()
        if not rows:
            return []
        box = self.box()
        return [self._info(row, box) for row in rows]

    def verify_security_key(self, node_id: str, key: str) -> bool:
        """True when ``key`` is the node's current key (constant-time comparison)."""
        row = self._sealed.security_key(node_id)
        if row is None:
            return False
        stored = self.box().open(row.sealed, security_key_context(node_id, row.key_version))
        return keys_equal(stored, key)

    def exported_security_keys(self, *, include_secrets: bool) -> dict[str, dict[str, object]]:
        """``mlnode_security`` of an export: versions, keys redacted unless asked for."""
        rows = self._sealed.security_keys()
        box = self.box() if rows and include_secrets else None
        return {
            row.node_id: {
                "key_version": row.key_version,
                "security_key": (
                    box.open(row.sealed, security_key_context(row.node_id, row.key_version))
                    if box is not None
                    else REDACTED
                ),
            }
            for row in rows
        }

    @property
    def key_file(self) -> Path:
        """The master key file used when ``API_STATE_KEY`` is unset."""
        return self._keys.key_file
