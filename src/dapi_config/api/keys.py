"""``/admin/v1/nodes/{id}/security-key``: per-node security keys (§11).

The full key is in the response only when it is issued (create: 201, rotate: 200), with
``Cache-Control: no-store``; reads show the version, timestamps and a fingerprint.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from dapi_config.api.deps import Manager
from dapi_config.api.errors import error_responses
from dapi_config.api.nodes import NodeId
from dapi_config.models import IssuedSecurityKey, SecurityKeyInfo

router = APIRouter(tags=["security keys"])

_NO_STORE = {"Cache-Control": "no-store"}


def _issued(key: IssuedSecurityKey, status: int) -> JSONResponse:
    return JSONResponse(key.model_dump(mode="json"), status_code=status, headers=_NO_STORE)


@router.post(
    "/nodes/{node_id}/security-key",
    status_code=201,
    response_model=IssuedSecurityKey,
    responses=error_responses(401, 404, 409, 422, 501, 503),
    summary="Create a node's security key",
)
def create_security_key(node_id: NodeId, cm: Manager) -> Any:
    """Issue the node's first key (version 1) and return it in full: the only time besides
    rotation that it is shown. 409 when the node already has a key (rotate it)."""
    return _issued(cm.create_security_key(node_id), 201)


@router.post(
    "/nodes/{node_id}/security-key/rotate",
    response_model=IssuedSecurityKey,
    responses=error_responses(401, 404, 422, 501, 503),
    summary="Rotate a node's security key",
)
def rotate_security_key(node_id: NodeId, cm: Manager) -> Any:
    """Replace the node's key (``key_version`` + 1) and return the new one in full; the old key
    stops verifying at once. 404 when the node or its key does not exist."""
    return _issued(cm.rotate_security_key(node_id), 200)


@router.get(
    "/nodes/{node_id}/security-key",
    response_model=SecurityKeyInfo,
    responses=error_responses(401, 404, 422, 501, 503),
    summary="Show a node's key version (never the key)",
)
def get_security_key(node_id: NodeId, cm: Manager) -> Any:
    """Version, timestamps and fingerprint of the node's current key."""
    return JSONResponse(cm.get_security_key_info(node_id).model_dump(mode="json"))


@router.delete(
    "/nodes/{node_id}/security-key",
    response_model=SecurityKeyInfo,
    responses=error_responses(401, 404, 422, 501, 503),
    summary="Revoke a node's security key",
)
def delete_security_key(node_id: NodeId, cm: Manager) -> Any:
    """Remove the node's key (it stops verifying); returns what it was, without the key."""
    return JSONResponse(cm.delete_security_key(node_id).model_dump(mode="json"))


@router.get(
    "/security-keys",
    response_model=list[SecurityKeyInfo],
    responses=error_responses(401, 501, 503),
    summary="List key versions of all nodes (never the keys)",
)
def list_security_keys(cm: Manager) -> Any:
    """Every node that has a key: version, timestamps, fingerprint; registration order."""
    return JSONResponse([i.model_dump(mode="json") for i in cm.get_security_keys()])
