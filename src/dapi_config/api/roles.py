"""The role each admin route needs (SPEC §11, Scoped tokens): one table, checked before routing.

``read`` may only look; ``write`` may change the state (the registry, height, versions, plan,
seeds, caches) but not keys, tokens or backups; ``admin`` may do everything. A test holds every
route of the OpenAPI document to an entry here, so a new route cannot ship without a role.
"""

from __future__ import annotations

from dapi_config.access import Role
from dapi_config.catalogue import KINDS

READ, WRITE, ADMIN = Role.READ, Role.WRITE, Role.ADMIN

#: Route name (= OpenAPI ``operationId``) -> the least role that may call it.
ROUTE_ROLES: dict[str, Role] = {
    # the node registry
    "list_nodes": READ,
    "get_node": READ,
    "create_node": WRITE,
    "replace_nodes": WRITE,
    "create_nodes": WRITE,
    "replace_node": WRITE,
    "delete_node": WRITE,
    "enable_node": WRITE,
    "disable_node": WRITE,
    # per-node security keys and the worker key: secrets, for admins
    "list_security_keys": READ,
    "get_security_key": READ,
    "create_security_key": ADMIN,
    "rotate_security_key": ADMIN,
    "delete_security_key": ADMIN,
    "create_worker_key": ADMIN,
    # the state and its documents (secrets redacted)
    "get_state": READ,
    "patch_state": WRITE,
    "get_overview": READ,
    "get_config": READ,
    "export_config": READ,
    "export_db": READ,
    "rotate_seeds": WRITE,
    "add_node_version": WRITE,
    "remove_node_version": WRITE,
    # each kind of state of the catalogue: read it, set it, clear it
    **{f"get_{kind.operation}": READ for kind in KINDS},
    **{f"set_{kind.operation}": WRITE for kind in KINDS if kind.write and not kind.collection},
    **{f"clear_{kind.operation}": WRITE for kind in KINDS if kind.clear is not None},
    # history, backups, tokens
    "read_audit": READ,
    "list_backups": READ,
    "create_backup": ADMIN,
    "restore_to": ADMIN,
    "whoami": READ,
    "list_tokens": ADMIN,
    "create_token": ADMIN,
    "revoke_token": ADMIN,
}


def role_for(route_name: str) -> Role:
    """The role ``route_name`` needs; a route missing from the table needs ``admin`` (the test
    keeps the table complete; this is the safe side if it were not)."""
    return ROUTE_ROLES.get(route_name, ADMIN)
