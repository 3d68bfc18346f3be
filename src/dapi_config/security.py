"""Keys: the worker's Ed25519 pair, fingerprints of secrets."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

REDACTED = "<redacted>"


@dataclass(frozen=True)
class WorkerKeyPair:
    """An Ed25519 key pair in the predecessor's encoding (base64 of Go's raw forms)."""

    public: str
    private: str


def generate_worker_key() -> WorkerKeyPair:
    """A new Ed25519 pair: public = base64(32-byte key); private = base64(seed || public),
    the 64-byte form Go's ``crypto/ed25519`` uses, so the predecessor can load it."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    seed = key.private_bytes_raw()
    return WorkerKeyPair(
        public=base64.b64encode(public).decode("ascii"),
        private=base64.b64encode(seed + public).decode("ascii"),
    )


def fingerprint(secret: str) -> str:
    """A short, non-reversible identifier of a secret for audit rows and logs."""
    digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
    return f"sha256:{digest[:16]}"
