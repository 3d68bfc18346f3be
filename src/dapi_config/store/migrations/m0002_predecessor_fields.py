"""Schema step 2: nothing a predecessor wrote is dropped.

Nodes gain the later eras' ``base_url`` and ``auth_token`` (sealed, '' = none), the 2024 era's
``url``, and ``extra`` (JSON of the fields the model does not know); seeds and upgrade plans gain
``extra`` too (parameter caches keep theirs inside their JSON already). Two tables hold what the
later predecessor's own ``gonka.db`` had beyond this schema: its ``kv_config`` rows without a
column here, and its BLS dealer openings (share and seed sealed)."""

SQL = """
ALTER TABLE inference_nodes ADD COLUMN base_url TEXT NOT NULL DEFAULT '';
ALTER TABLE inference_nodes ADD COLUMN auth_token TEXT NOT NULL DEFAULT '';
ALTER TABLE inference_nodes ADD COLUMN url TEXT NOT NULL DEFAULT '';
ALTER TABLE inference_nodes ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
ALTER TABLE seed_info ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
ALTER TABLE upgrade_plans ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';

-- kv_config rows of an imported gonka.db that no column here holds, kept as they were.
CREATE TABLE predecessor_kv (
    key TEXT PRIMARY KEY,
    value_json TEXT NOT NULL,
    imported_at TEXT NOT NULL
);

-- BLS dealer openings of an imported gonka.db; share_bytes and seed sealed (base64 inside).
CREATE TABLE bls_dealer_openings (
    epoch_id INTEGER NOT NULL,
    recipient_index INTEGER NOT NULL,
    ciphertext_index INTEGER NOT NULL,
    slot_index INTEGER NOT NULL,
    share_bytes TEXT NOT NULL,
    seed TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    PRIMARY KEY (epoch_id, recipient_index, ciphertext_index)
);
"""

#: The same step in PostgreSQL's DDL (64-bit epoch ids as BIGINT).
PG_SQL = SQL.replace("    epoch_id INTEGER NOT NULL,", "    epoch_id BIGINT NOT NULL,")
