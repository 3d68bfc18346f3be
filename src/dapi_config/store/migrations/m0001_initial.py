"""Schema step 1: the proposal's tables (names and columns kept for the ``sqlite3`` shell),
plus the audit log, secrets, legacy-import bookkeeping and per-node security keys."""

SQL = """
CREATE TABLE schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- Chain state: current_height, current_node_version, last_processed_height, last_used_version.
CREATE TABLE chain_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- Seeds with history: one active row per type; older rows kept with is_active = 0.
CREATE TABLE seed_info (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL CHECK (type IN ('current', 'previous', 'upcoming')),
    seed INTEGER NOT NULL,
    epoch_index INTEGER NOT NULL,
    signature TEXT NOT NULL,
    claimed BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    is_active BOOLEAN DEFAULT TRUE
);
CREATE UNIQUE INDEX seed_info_one_active ON seed_info(type) WHERE is_active;

CREATE TABLE network_params (
    param_type TEXT PRIMARY KEY,
    param_data TEXT NOT NULL,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE node_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    height INTEGER NOT NULL,
    version TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE(height, version)
);
CREATE INDEX node_versions_by_height ON node_versions(height, id);

CREATE TABLE upgrade_plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    height INTEGER NOT NULL,
    binaries TEXT NOT NULL,
    node_version TEXT NOT NULL DEFAULT '',
    is_active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX upgrade_plans_one_active ON upgrade_plans(is_active) WHERE is_active;

CREATE TABLE inference_nodes (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    inference_segment TEXT NOT NULL,
    inference_port INTEGER NOT NULL,
    poc_segment TEXT NOT NULL,
    poc_port INTEGER NOT NULL,
    models TEXT NOT NULL,
    max_concurrent INTEGER NOT NULL,
    hardware TEXT NOT NULL,
    version TEXT NOT NULL,
    is_enabled BOOLEAN DEFAULT TRUE,
    position INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX inference_nodes_by_position ON inference_nodes(position);

CREATE TABLE mlnode_security (
    node_id TEXT PRIMARY KEY,
    security_key TEXT NOT NULL,
    key_version INTEGER NOT NULL DEFAULT 1,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (node_id) REFERENCES inference_nodes(id) ON DELETE CASCADE
);

-- Named secrets kept out of the YAML file (the worker key pair).
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- Every state change, written in the same transaction as the change.
CREATE TABLE audit_log (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT
);

-- One-time imports (legacy YAML, NODE_CONFIG_PATH), so a restart never imports twice.
CREATE TABLE legacy_imports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    source_path TEXT NOT NULL,
    checksum TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX legacy_imports_by_kind ON legacy_imports(kind, checksum);
"""
