"""Audit-trail settings: how much history the state file keeps.

``API_AUDIT_KEEP`` (read at open):

- unset: keep the newest :data:`DEFAULT_AUDIT_KEEP_ROWS` rows;
- ``N`` (a whole number >= 1): keep the newest N rows;
- ``Nd`` (e.g. ``30d``): keep rows younger than N days;
- ``all`` or ``0``: keep everything.

Pruning is cheap and bounded: one write in every ``AUDIT_PRUNE_EVERY`` (1,000) deletes at most
``AUDIT_PRUNE_BATCH`` (10,000) of the oldest rows by primary-key range, inside that write's
transaction; ``ConfigManager.prune_audit()`` runs it on demand. Revisions are never reused, so
pollers following ``since=REV`` are unaffected, except that rows older than the retention are gone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dapi_config.errors import ConfigError
from dapi_config.store.sqlite import AuditRetention

AUDIT_KEEP_ENV = "API_AUDIT_KEEP"
#: About a week of history at one block every six seconds, a few tens of MB.
DEFAULT_AUDIT_KEEP_ROWS = 100_000

_DAYS = re.compile(r"^(\d+(?:\.\d+)?)\s*d$")


def parse_audit_keep(value: str | None, source: str = AUDIT_KEEP_ENV) -> AuditRetention:
    """The retention named by ``value`` (see the module docstring); raises :class:`ConfigError`."""
    if value is None or value.strip() == "":
        return AuditRetention(rows=DEFAULT_AUDIT_KEEP_ROWS)
    text = value.strip().lower()
    if text in ("all", "0"):
        return AuditRetention()
    if text.isdigit():
        return AuditRetention(rows=int(text))
    match = _DAYS.match(text)
    if match and float(match.group(1)) > 0:
        return AuditRetention(days=float(match.group(1)))
    raise ConfigError(
        f"{source}: expected a number of rows (e.g. 100000), days (e.g. 30d) or 'all', "
        f"got {value!r}"
    )


def audit_retention_from_env(env: Mapping[str, str]) -> AuditRetention:
    """The retention configured by ``API_AUDIT_KEEP`` in ``env``."""
    return parse_audit_keep(env.get(AUDIT_KEEP_ENV))
