"""Schema step 3: scoped API tokens (SPEC §11). Only each token's SHA-256 is kept (see
:mod:`dapi_config.access`); a revoked token's row is deleted, its creation and revocation stay
in the audit trail."""

SQL = """
CREATE TABLE api_tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);
"""

#: The same step in PostgreSQL's DDL (the same text: nothing here differs).
PG_SQL = SQL
