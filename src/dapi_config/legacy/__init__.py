"""The predecessor's single-file YAML: detect it, import it, write it back for a rollback.

Upgrade (on :meth:`ConfigManager.open` and by ``dapi-config migrate``), in three steps that can
each be interrupted:

1. copy the file byte for byte to ``<config>.pre-migration.<UTC timestamp>`` (0600);
2. import every dynamic value into the state file in ONE transaction that also records the
   source path and the file's SHA-256 in ``legacy_imports`` (actor ``migration``);
3. rewrite the config file to its static part only, atomically, keeping the file's comments,
   key order, unknown keys, formatting and mode.

Resuming after a crash: before step 2 the file still holds its dynamic keys and no import of its
checksum is recorded, so everything is redone (an existing backup with the same bytes is
reused). After step 2 the checksum is recorded, so the next run only rewrites. After step 3
the file has no dynamic keys and nothing happens (the file is not touched).

Rollback: :func:`rollback_document` + :func:`render_legacy_yaml` give the predecessor's exact
layout (static + dynamic), which the old binary loads; for a state upgraded from a ``gonka.db``,
:func:`roll_back_gonka_db` brings that file up to date too (its binary reads it, not the YAML).

Modules: :mod:`.parse` (which keys are dynamic, their values checked), :mod:`.text` (pure text
surgery that drops them and keeps the comments), :mod:`.migrate` (the three steps),
:mod:`.layout` (the rollback file and the ``dual`` mirror), :mod:`.yaml_mode` (the
``API_STATE_MODE=yaml`` backend), :mod:`.gonka_db` (the later predecessor's own SQLite state).
``NODE_CONFIG_PATH`` lives in :mod:`dapi_config.node_import`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dapi_config._lazy import lazy_exports

#: Where each public name lives: imported when first asked for, so opening a state (which
#: only asks whether the config file still holds the predecessor's keys) does not load the
#: ``gonka.db`` reader, the migration and the rollback writer.
_EXPORTS = {
    **dict.fromkeys(
        (
            "GONKA_DB_KIND",
            "GonkaDbReport",
            "GonkaDbRollback",
            "check_gonka_db_for_rollback",
            "gonka_db_to_import",
            "import_gonka_db",
            "read_gonka_db",
            "roll_back_gonka_db",
        ),
        "dapi_config.legacy.gonka_db",
    ),
    **dict.fromkeys(
        (
            "MIRROR_SUFFIX",
            "ExportSource",
            "RollbackReport",
            "attach_mirror",
            "mirror_path_for",
            "render_legacy_yaml",
            "rollback_document",
            "write_rollback",
        ),
        "dapi_config.legacy.layout",
    ),
    **dict.fromkeys(
        (
            "BACKUP_INFIX",
            "LegacyFile",
            "MigrationReport",
            "SealReport",
            "apply_legacy_state",
            "current_state",
            "import_state",
            "legacy_file",
            "migrate_legacy_file",
            "plan_migration",
            "rewrite_static",
            "seal_file_secrets",
            "write_backup",
        ),
        "dapi_config.legacy.migrate",
    ),
    **dict.fromkeys(
        (
            "LEGACY_KIND",
            "MIGRATION_ACTOR",
            "NODE_CONFIG_KIND",
            "LegacyState",
            "checksum_of",
            "describe_state",
            "dynamic_keys_in",
            "parse_legacy_state",
        ),
        "dapi_config.legacy.parse",
    ),
    **dict.fromkeys(
        (
            "static_text",
            "strip_keys_text",
        ),
        "dapi_config.legacy.text",
    ),
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from dapi_config.legacy.gonka_db import (
        GONKA_DB_KIND,
        GonkaDbReport,
        GonkaDbRollback,
        check_gonka_db_for_rollback,
        gonka_db_to_import,
        import_gonka_db,
        read_gonka_db,
        roll_back_gonka_db,
    )
    from dapi_config.legacy.layout import (
        MIRROR_SUFFIX,
        ExportSource,
        RollbackReport,
        attach_mirror,
        mirror_path_for,
        render_legacy_yaml,
        rollback_document,
        write_rollback,
    )
    from dapi_config.legacy.migrate import (
        BACKUP_INFIX,
        LegacyFile,
        MigrationReport,
        SealReport,
        apply_legacy_state,
        current_state,
        import_state,
        legacy_file,
        migrate_legacy_file,
        plan_migration,
        rewrite_static,
        seal_file_secrets,
        write_backup,
    )
    from dapi_config.legacy.parse import (
        LEGACY_KIND,
        MIGRATION_ACTOR,
        NODE_CONFIG_KIND,
        LegacyState,
        checksum_of,
        describe_state,
        dynamic_keys_in,
        parse_legacy_state,
    )
    from dapi_config.legacy.text import static_text, strip_keys_text

__all__ = [
    "BACKUP_INFIX",
    "GONKA_DB_KIND",
    "LEGACY_KIND",
    "MIGRATION_ACTOR",
    "MIRROR_SUFFIX",
    "NODE_CONFIG_KIND",
    "ExportSource",
    "GonkaDbReport",
    "GonkaDbRollback",
    "LegacyFile",
    "LegacyState",
    "MigrationReport",
    "RollbackReport",
    "SealReport",
    "apply_legacy_state",
    "attach_mirror",
    "check_gonka_db_for_rollback",
    "checksum_of",
    "current_state",
    "describe_state",
    "dynamic_keys_in",
    "gonka_db_to_import",
    "import_gonka_db",
    "import_state",
    "legacy_file",
    "migrate_legacy_file",
    "mirror_path_for",
    "parse_legacy_state",
    "plan_migration",
    "read_gonka_db",
    "render_legacy_yaml",
    "rewrite_static",
    "roll_back_gonka_db",
    "rollback_document",
    "seal_file_secrets",
    "static_text",
    "strip_keys_text",
    "write_backup",
    "write_rollback",
]
