"""The cryptography, and nothing else: deriving the master key, sealing and opening values,
generating and checking keys. Where the sealed values are kept is :mod:`dapi_config.secrets`.

Secrets in the state file (the worker private key, per-node security keys) are stored as
AES-256-GCM ciphertexts under a *master key*. The master key is derived with a standard KDF from
one of two sources, chosen when the state is opened:

- ``API_STATE_KEY`` (any secret string of at least 16 characters) -> scrypt (n=2**14, r=8, p=1);
- otherwise a key file of 32 random bytes beside the state file (``<state>.key``, mode 0600),
  generated on first use -> HKDF-SHA256.

Both use a random per-file salt. The salt, the KDF and a *check value* (a known plaintext
encrypted under the master key) are kept in the state file (:class:`KeyParams`), so a wrong
master key is reported as a clear :class:`MasterKeyError` instead of decrypting to garbage.
Each ciphertext is bound to its record (``associated data`` = what it is and for whom), so a
ciphertext copied onto another row does not decrypt.

Nothing here does SQL: the manager reads and writes :class:`KeyParams` through the store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from dapi_config._files import fsync_directory, make_durable_dir
from dapi_config.errors import MasterKeyError
from dapi_config.models import REDACTED
from dapi_config.settings import STATE_KEY_ENV

log = logging.getLogger(__name__)

#: The name under which the worker key pair is stored (a row name, not a secret).
WORKER_KEY_SECRET = "worker_key"  # noqa: S105


def security_key_context(node_id: str, version: int) -> str:
    """What a sealed per-node key is bound to: a ciphertext copied to another node or key
    version fails to open."""
    return f"mlnode_security:{node_id}:{version}"


#: Environment variable holding the master secret (a passphrase of >= 16 characters).
#: The key file's name is the state file's name plus this suffix (``state.db.key``).
KEY_FILE_SUFFIX = ".key"
KEY_FILE_BYTES = 32

#: The audit chain's key derivation: its own salt and context, so the chain key is never the
#: sealing key (nor one from which the sealing key follows).
_CHAIN_SALT = b"dapi-config audit chain"
_CHAIN_INFO = b"dapi-config audit chain v1"
_TOKEN_PREFIX = "v1."  # noqa: S105 - a format marker
_NONCE_BYTES = 12
_CHECK_PLAINTEXT = b"dapi-config master key check"
_CHECK_CONTEXT = "master-key-check"
# scrypt's "interactive" parameters: ~16 MiB and a few tens of ms, paid once per open.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_HKDF_INFO = b"dapi-config secrets at rest v1"


# --- the worker key and fingerprints ---------------------------------------------------------


@dataclass(frozen=True)
class WorkerKeyPair:
    """An Ed25519 key pair in the predecessor's encoding (base64 of Go's raw forms)."""

    public: str
    private: str

    def __repr__(self) -> str:  # never print the private half
        return f"WorkerKeyPair(public={self.public!r}, private={REDACTED!r})"


def generate_worker_key() -> WorkerKeyPair:
    """A new Ed25519 pair: public = base64(32-byte key); private = base64(seed || public),
    the 64-byte form Go's ``crypto/ed25519`` uses, so the predecessor can load it."""
    # cryptography (~8 MiB resident) is imported where it is first needed: a service whose
    # state holds no secret never loads it.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        Encoding,
        PublicFormat,
    )

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    seed = key.private_bytes_raw()
    return WorkerKeyPair(
        public=base64.b64encode(public).decode("ascii"),
        private=base64.b64encode(seed + public).decode("ascii"),
    )


def generate_security_key() -> str:
    """A new per-node security key: 32 random bytes, URL-safe base64 without padding."""
    return secrets.token_urlsafe(32)


def fingerprint(secret: str) -> str:
    """A short, non-reversible identifier of a secret for audit rows and logs."""
    digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
    return f"sha256:{digest[:16]}"


def keys_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# --- KDF parameters stored in the state file ---------------------------------------------


@dataclass(frozen=True)
class KeyParams:
    """How the master key of one state file is derived, plus its check value. Not secret."""

    source: str  # "env" (API_STATE_KEY) or "file" (the key file)
    kdf: str  # "scrypt" or "hkdf-sha256"
    salt: str  # base64
    check: str  # the check plaintext encrypted under the master key
    n: int = 0
    r: int = 0
    p: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str, where: str) -> KeyParams:
        try:
            data = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError):
            raise MasterKeyError(
                f"{where}: the stored master-key parameters are damaged; restore a backup"
            ) from None


# --- sealing ------------------------------------------------------------------------------


class SecretBox:
    """AES-256-GCM under a derived master key; each ciphertext bound to a ``context``."""

    def __init__(self, key: bytes, description: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        self._aead = AESGCM(key)
        #: Where the master key came from, for messages (never the key itself).
        self.description = description

    def __repr__(self) -> str:
        return f"SecretBox({self.description})"

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt ``plaintext``; the result decrypts only with the same ``context``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), _aad(context))
        return _TOKEN_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, token: str, context: str) -> str:
        """Decrypt a value made by :meth:`seal` with the same ``context``.

        Raises :class:`MasterKeyError` when the master key is wrong or the value was altered.
        """
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415

        if not token.startswith(_TOKEN_PREFIX):
            raise MasterKeyError(f"{context}: the stored value is not an encrypted secret")
        try:
            raw = base64.urlsafe_b64decode(token[len(_TOKEN_PREFIX) :].encode("ascii"))
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(context))
        except (InvalidTag, ValueError, binascii.Error):
            raise MasterKeyError(
                f"{context}: cannot decrypt the stored secret with the master key from "
                f"{self.description}: the key is not the one it was encrypted with, or the "
                "value was altered"
            ) from None
        return plain.decode("utf-8")


def is_sealed(value: str) -> bool:
    """True when ``value`` is a ciphertext made by :meth:`SecretBox.seal`."""
    return value.startswith(_TOKEN_PREFIX)


def _aad(context: str) -> bytes:
    return b"dapi-config:" + context.encode("utf-8")


# --- the master key -------------------------------------------------------------------------


def key_file_path(state_path: str | os.PathLike[str]) -> Path:
    """The key file used when ``API_STATE_KEY`` is unset: ``<state file>.key``."""
    return Path(f"{state_path}{KEY_FILE_SUFFIX}")


class MasterKeySource:
    """Where this process gets the master key: ``API_STATE_KEY`` or the key file.

    Derivation is lazy (only when a secret is read or written) and cached per salt, so opening a
    state file for a command that never touches secrets costs nothing.
    """

    def __init__(
        self, state_path: str | os.PathLike[str], passphrase: str | None, *, shared: bool = False
    ) -> None:
        """``passphrase``: the checked ``API_STATE_KEY`` (:attr:`Settings.state_key`), or None
        to use the key file ``<state>.key``. ``shared``: a state several replicas share (on
        PostgreSQL): no key file, the key must come from ``API_STATE_KEY``."""
        self._state_path: str | Path = str(state_path) if shared else Path(state_path)
        self._passphrase = passphrase
        self._shared = shared
        self.key_file = key_file_path(state_path) if not shared else Path(os.devnull)
        self._lock = threading.Lock()
        self._cache: tuple[KeyParams, SecretBox] | None = None
        self._chain_key: bytes | None = None

    def __repr__(self) -> str:
        return f"MasterKeySource({self.description})"

    @property
    def description(self) -> str:
        return STATE_KEY_ENV if self._passphrase is not None else f"key file {self.key_file}"

    def chain_key(self) -> bytes | None:
        """The key the audit trail's rows are chained under (:mod:`dapi_config.store.chain`),
        derived from the master key: from ``API_STATE_KEY`` when it is set, else from the key
        file when there is one; None when there is no master key (the chain is then plain
        SHA-256). Never creates the key file; a key file it cannot read counts as none (the
        deep check then reports the unsigned rows). Derived once per process."""
        with self._lock:
            if self._chain_key is not None:
                return self._chain_key
            # The standard library's scrypt and HMAC: a state without secrets never loads
            # cryptography (a service's memory, see tests/test_imports.py).
            if self._passphrase is not None:
                material = hashlib.scrypt(
                    self._passphrase.encode("utf-8"),
                    salt=_CHAIN_SALT,
                    n=_SCRYPT_N,
                    r=_SCRYPT_R,
                    p=_SCRYPT_P,
                    maxmem=64 * 1024 * 1024,
                    dklen=32,
                )
            elif self._shared:
                return None
            elif not os.path.lexists(self.key_file):
                # Until a secret is sealed there is none: one stat per write, not an open that
                # fails (a key file created later, by any process, is taken from then on).
                return None
            else:
                try:
                    material = self._read_key_file(must_exist=False)
                except MasterKeyError as exc:
                    log.warning("audit chain: %s; rows are chained without the key", exc)
                    return None
                if not material:
                    return None
            # HKDF-SHA256 (RFC 5869) for one 32-byte block: extract, then expand.
            prk = hmac.new(_CHAIN_SALT, material, hashlib.sha256).digest()
            self._chain_key = hmac.new(prk, _CHAIN_INFO + b"\x01", hashlib.sha256).digest()
            return self._chain_key

    def _require_passphrase(self) -> None:
        if self._shared and self._passphrase is None:
            raise MasterKeyError(
                f"{self._state_path}: on PostgreSQL the master key must come from "
                f"{STATE_KEY_ENV} (16 characters or more, the same on every replica): there is "
                "no directory for a key file. Set it and retry; nothing was changed"
            )

    def box(self, params: KeyParams | None) -> tuple[SecretBox, KeyParams | None]:
        """The box for a state file whose stored parameters are ``params``.

        With ``params`` None (no secret stored yet) new parameters are made (and the key file
        created when needed); they are returned for the caller to store in the same transaction
        as the first secret. Raises :class:`MasterKeyError` when the master key does not match.
        """
        self._require_passphrase()
        with self._lock:
            if params is not None and self._cache is not None and self._cache[0] == params:
                return self._cache[1], None
            if params is None:
                box, made = self._new_params()
                self._cache = (made, box)
                return box, made
            box = self._derive(params)
            try:
                plain = box.open(params.check, _CHECK_CONTEXT)
            except MasterKeyError:
                plain = ""
            if not hmac.compare_digest(plain.encode("utf-8"), _CHECK_PLAINTEXT):
                raise MasterKeyError(self._mismatch_message(params)) from None
            self._cache = (params, box)
            return box, None

    def missing_key_file(self, params: KeyParams) -> str | None:
        """What is wrong when secrets sealed under the key file (``params``) can no longer be
        opened at the next start because the key file is gone; None when it is there."""
        if params.kdf != "hkdf-sha256" or self.key_file.exists():
            return None
        return (
            f"the master key file {self.key_file} is missing: the next start cannot decrypt the "
            "secrets in the state file; restore it from your backup of the key file"
        )

    def _mismatch_message(self, params: KeyParams) -> str:
        stored = STATE_KEY_ENV if params.source == "env" else f"the key file {self.key_file}"
        return (
            f"{self._state_path}: the master key from {self.description} does not open the "
            f"secrets in this state file (they were encrypted under a key from {stored}). "
            f"Set the {STATE_KEY_ENV} that was used, or restore the key file; nothing was changed"
        )

    def _new_params(self) -> tuple[SecretBox, KeyParams]:
        salt = os.urandom(16)
        if self._passphrase is not None:
            params = KeyParams("env", "scrypt", _b64(salt), "", _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
        else:
            self._ensure_key_file()
            params = KeyParams("file", "hkdf-sha256", _b64(salt), "")
        box = self._derive(params)
        check = box.seal(_CHECK_PLAINTEXT.decode("ascii"), _CHECK_CONTEXT)
        return box, KeyParams(**{**asdict(params), "check": check})

    def _derive(self, params: KeyParams) -> SecretBox:
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # noqa: PLC0415

        salt = base64.b64decode(params.salt)
        if params.kdf == "scrypt":
            if self._passphrase is None:
                raise MasterKeyError(
                    f"{self._state_path}: the secrets in this state file are encrypted under "
                    f"{STATE_KEY_ENV}, which is not set; set it to the value used before"
                )
            key = Scrypt(salt=salt, length=32, n=params.n, r=params.r, p=params.p).derive(
                self._passphrase.encode("utf-8")
            )
        elif params.kdf == "hkdf-sha256":
            if self._passphrase is not None:
                # The file's secrets were sealed under the key file; the passphrase cannot
                # open them. Say so instead of deriving a key that fails the check.
                raise MasterKeyError(self._mismatch_message(params))
            material = self._read_key_file(must_exist=True)
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(
                material
            )
        else:
            raise MasterKeyError(
                f"{self._state_path}: unknown key derivation {params.kdf!r}; this state file "
                "was written by a newer dapi-config"
            )
        return SecretBox(key, self.description)

    # --- the key file ------------------------------------------------------------------------

    def _read_key_file(self, *, must_exist: bool) -> bytes:
        path = self.key_file
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            if must_exist:
                raise MasterKeyError(
                    f"{self._state_path}: the master key file {path} is missing, so the secrets "
                    "in the state file cannot be decrypted; restore it from your backup of the "
                    "key file"
                ) from None
            return b""
        except (OSError, UnicodeDecodeError) as exc:
            raise MasterKeyError(f"{path}: cannot read the master key file ({exc})") from None
        try:
            material = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            material = b""
        if len(material) != KEY_FILE_BYTES:
            raise MasterKeyError(
                f"{path}: not a dapi-config master key file (expected {KEY_FILE_BYTES} bytes, "
                "base64); restore it from your backup"
            )
        _tighten(path)
        return material

    def _ensure_key_file(self) -> None:
        """Create the key file (0600) unless it exists; safe against concurrent creators."""
        path = self.key_file
        if self._read_key_file(must_exist=False):
            return
        make_durable_dir(path.parent, mode=0o777)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, base64.b64encode(os.urandom(KEY_FILE_BYTES)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if the name exists: of two processes creating the key at once,
            # exactly one wins and the other reads the winner's file.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        fsync_directory(path.parent)
        log.warning(
            "generated the master key file %s (mode 0600): back it up together with the state "
            "file; secrets in the state file cannot be decrypted without it",
            path,
        )


def _tighten(path: Path) -> None:
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        log.warning("master key file %s had mode %o; tightened to 600", path, mode)
        os.chmod(path, mode & 0o600)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
