"""Scoped API tokens (SPEC §11): created, listed, revoked, and the token a request carries
looked up. What a role may do is the surfaces' business (:mod:`dapi_config.api.roles`)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from dapi_config.access import (
    NewToken,
    Role,
    TokenInfo,
    check_token_name,
    new_token,
    token_digest,
)
from dapi_config.manager._base import ManagerBase
from dapi_config.static import admin_token_of
from dapi_config.store.backend import ApiTokens

log = logging.getLogger("dapi_config.access")

#: A token's "last used" time is written at most this often per process (seconds): a busy
#: dashboard must not turn every read into a write.
LAST_USED_EVERY_S = 60.0


class ApiAccess(ManagerBase):
    """The admin API's credentials: ``api.admin_token`` (or ``api.admin_token_file``) and the
    scoped tokens kept in the state, shared by every replica."""

    def _need_tokens(self) -> ApiTokens:
        if self._tokens is None:
            raise self._lacking(ApiTokens)
        return self._tokens

    def admin_token(self) -> str | None:
        """The unnamed admin token of the config (``api.admin_token``, or the file
        ``api.admin_token_file`` names), None when neither is set. Raises :class:`ConfigError`
        (both set, or the file unreadable or empty)."""
        return admin_token_of(self._loaded.config.api, self._loaded.path.parent)

    def create_token(self, name: str, role: Role | str) -> NewToken:
        """A new token called ``name`` with ``role``: its value is in the result only (the
        state keeps its SHA-256). Raises :class:`ValidationError`, :class:`TokenExistsError`,
        :class:`NotSupportedError` (``yaml`` mode)."""
        tokens = self._need_tokens()
        check_token_name(name)
        role = role if isinstance(role, Role) else Role.parse(role)
        token = new_token()
        with self._store.transaction():
            info = tokens.add_api_token(name, role, token_digest(token))
        return NewToken(info, token)

    def list_tokens(self) -> list[TokenInfo]:
        """Every scoped token (names, roles, created, last used), by name."""
        return [] if self._tokens is None else self._tokens.api_tokens()

    def revoke_token(self, name: str) -> TokenInfo:
        """Delete the token ``name``: every replica refuses it from its next request. Raises
        :class:`TokenNotFoundError`."""
        tokens = self._need_tokens()
        with self._store.transaction():
            return tokens.remove_api_token(name)

    def has_tokens(self) -> bool:
        """True once any scoped token exists (then every admin route needs a token)."""
        # Asked on every API request: the capability was looked up once, at open (an
        # isinstance against a Protocol costs more than the query).
        return self._tokens is not None and self._tokens.has_api_tokens()

    def token_identity(self, token: str) -> TokenInfo | None:
        """The scoped token ``token`` is (None: no such token, or revoked), its "last used"
        time brought up to date now and then."""
        if self._tokens is None:
            return None
        info = self._tokens.api_token_by_digest(token_digest(token))
        if info is not None:
            self._note_use(self._tokens, info.name)
        return info

    def _note_use(self, tokens: ApiTokens, name: str) -> None:
        now = time.monotonic()
        with self._token_uses_lock:
            if now - self._token_uses.get(name, -LAST_USED_EVERY_S) < LAST_USED_EVERY_S:
                return
            self._token_uses[name] = now
        try:
            with self._store.transaction():
                tokens.mark_api_token_used(name, datetime.now(UTC).isoformat(timespec="seconds"))
        except Exception as exc:
            log.debug("could not record the use of token %s: %s", name, exc)
