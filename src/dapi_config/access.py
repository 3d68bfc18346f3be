"""Who may do what through the admin API (SPEC §11, Scoped tokens): roles, and the tokens that
carry them.

A scoped token is ``dapi_`` + 32 random bytes (256 bits, URL-safe base64). It is shown once, when
it is created; the state keeps its SHA-256 only. A plain hash is enough here, where a password
store needs a slow one (bcrypt, scrypt): a slow hash makes guessing a *low-entropy* secret
costly, but no one can enumerate 2**256 candidates at any speed, so a leaked hash gives nothing
usable; and an unsalted digest lets a request's token be found with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import IntEnum

from dapi_config.errors import ValidationError

#: What every scoped token starts with: a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "dapi_"  # noqa: S105 - a prefix, not a secret
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Role(IntEnum):
    """What a token may do; each role may do everything the ones below it may."""

    #: Read anything the admin API shows (GET): dashboards, monitoring, the remote reader.
    READ = 1
    #: Change the state (nodes, height, versions, plan, seeds, caches) but not keys, tokens
    #: or backups.
    WRITE = 2
    #: Everything: security and worker keys, tokens, backups and restores.
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role called ``text`` (``read``, ``write``, ``admin``)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValidationError(
                f"unknown role {text!r}: use read, write or admin",
                [{"field": "role", "message": "expected read, write or admin"}],
            ) from None


@dataclass(frozen=True)
class TokenInfo:
    """A scoped token as ``tokens list`` shows it (never the token itself)."""

    name: str
    role: Role
    created_at: str
    last_used_at: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "role": self.role.label,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True)
class NewToken:
    """A token just created: ``token`` is shown this once and kept nowhere."""

    info: TokenInfo
    token: str

    def to_dict(self) -> dict[str, str | None]:
        return {**self.info.to_dict(), "token": self.token}


@dataclass(frozen=True)
class Identity:
    """Who a request is: a scoped token's name (None for ``api.admin_token`` or an API that
    needs no token) and its role."""

    name: str | None
    role: Role

    @property
    def actor(self) -> str:
        """The audit actor of this identity's changes (``api`` or ``api:NAME``)."""
        return "api" if self.name is None else f"api:{self.name}"


#: An admin API without tokens: every caller may do everything (loopback, or explicitly open).
OPEN = Identity(None, Role.ADMIN)


def no_token_warning(host: str) -> str:
    """What ``serve`` logs, and the console shows, when the admin API has no token."""
    return (
        f"the admin API on {host} has no admin token: anyone who can reach the port can "
        "change the node registry; create one with dapi-config tokens create NAME --role "
        "admin, or set api.admin_token (DAPI_API__ADMIN_TOKEN)"
    )


def check_token_name(name: str) -> str:
    """``name`` when it is a usable token name (letters, digits, ``.``, ``_``, ``-``; 64 at most,
    starting with a letter or digit)."""
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"bad token name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
            [{"field": "name", "message": "expected [A-Za-z0-9][A-Za-z0-9._-]{0,63}"}],
        )
    return name


def new_token() -> str:
    """A fresh token: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the state keeps of ``token`` (hex SHA-256; see the module doc for why unsalted)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


__all__ = [
    "OPEN",
    "TOKEN_PREFIX",
    "Identity",
    "NewToken",
    "Role",
    "TokenInfo",
    "check_token_name",
    "new_token",
    "no_token_warning",
    "token_digest",
]
