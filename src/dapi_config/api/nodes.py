"""``/admin/v1/nodes``: the inference-node registry (predecessor-compatible routes + new ones).

The predecessor's replies are kept, as its own clients (testermint's ``ApplicationAPI``) parse
them: ``GET /nodes`` is a list of ``{"node": ..., "state": {"admin_state": ...}}`` (runtime
statuses belong to the broker and are absent here), ``POST /nodes`` 200 (an existing id is
replaced), ``POST /nodes/batch`` 201, ``DELETE /nodes/{id}`` 200 with the removed node,
enable/disable 200 with ``{"message", "node_id"}``. Differences on purpose: the batch is all
or nothing (the predecessor kept the nodes that succeeded), and ``PUT /nodes/{id}`` creates a
missing node (201). Node reads and writes carry an ``ETag``; ``PUT`` and ``DELETE`` honour
``If-Match`` (412 when stale, nothing written).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from dapi_config._validation import etag_of_dump
from dapi_config.api.bodies import (
    NODE_BODY_DOC,
    NODES_BODY_DOC,
    REPLACEMENT_BODY_DOC,
    parse_node,
    parse_nodes,
)
from dapi_config.api.deps import Manager
from dapi_config.api.errors import error_responses
from dapi_config.api.write_queue import Staged
from dapi_config.manager import INT64_MAX, MAX_NODE_PAGE, ConfigManager, page_of
from dapi_config.models import NODE_ID_PATTERN, InferenceNodeConfig

router = APIRouter(prefix="/nodes", tags=["nodes"])

NodeId = Annotated[
    str,
    Path(
        pattern=NODE_ID_PATTERN,
        max_length=128,
        description="Node id: 1-128 of A-Z a-z 0-9 . _ : @ - (starting with a letter or digit)",
    ),
]
# A string defaulting to "" (not ``str | None``): the document then says "a string", and no
# client or fuzzer sends the text "null" for an absent header.
IfMatch = Annotated[
    str,
    Header(
        alias="If-Match",
        description='ETag(s) from a previous read, or "*"; a stale value gives 412.',
    ),
]


class AdminState(BaseModel):
    """The predecessor's ``admin_state``: whether the node is enabled. ``epoch`` (when the
    state was last set, in the Go broker) is not tracked here and is always 0."""

    enabled: bool
    epoch: int = 0


class NodeState(BaseModel):
    """What this service knows of a node's state (the broker's runtime statuses are absent)."""

    admin_state: AdminState


class NodeWithState(BaseModel):
    """One item of ``GET /admin/v1/nodes``, as the predecessor's ``NodeResponse``."""

    node: InferenceNodeConfig
    state: NodeState


def _with_state(node: InferenceNodeConfig) -> dict[str, Any]:
    return {
        "node": node.model_dump(mode="json"),
        "state": {"admin_state": {"enabled": node.is_enabled, "epoch": 0}},
    }


class NodeMessage(BaseModel):
    """The predecessor's enable/disable reply."""

    message: str
    node_id: str


def _node_response(node: InferenceNodeConfig, status: int = 200) -> JSONResponse:
    dumped = node.model_dump(mode="json")
    return JSONResponse(dumped, status_code=status, headers={"ETag": etag_of_dump(dumped)})


def stage_put_node(
    raw: bytes, content_type: str | None, path_id: str | None = None, if_match: str = ""
) -> Staged:
    """One node parsed and checked for ``POST /nodes`` (``path_id`` None) and
    ``PUT /nodes/{id}``: its write and its reply."""
    node = parse_node(raw, content_type, path_id)
    tags = parse_if_match(if_match)

    def answer(result: tuple[InferenceNodeConfig, bool]) -> JSONResponse:
        stored, created = result
        # POST answers 200 either way (the predecessor's reply); PUT says 201 when it created.
        return _node_response(stored, 201 if created and path_id is not None else 200)

    return Staged(lambda cm: cm.put_node(node, if_match=tags), answer)


def stage_add_nodes(raw: bytes, content_type: str | None) -> Staged:
    """A batch of nodes parsed for ``POST /nodes/batch`` (all or nothing): its write and
    its reply."""
    nodes = parse_nodes(raw, content_type)
    return Staged(
        lambda cm: cm.add_nodes(nodes),
        lambda stored: JSONResponse([n.model_dump(mode="json") for n in stored], status_code=201),
    )


def parse_if_match(value: str | None) -> list[str] | None:
    """The entity tags of an ``If-Match`` header (weak tags never match: strong comparison);
    None when there is none."""
    if not value:
        return None
    tags = [t.strip() for t in value.split(",") if t.strip()]
    # No tag in it (",", spaces): no current value can match it, so 412 as for a stale tag.
    # A tag sent without its quotes (some clients strip them) is compared as the quoted tag:
    # it matches when it is the current one, else 412, never an error about its shape.
    return [t if t == "*" or t.startswith(('"', "W/")) else f'"{t}"' for t in tags]


@router.get(
    "",
    response_model=list[NodeWithState],
    responses={
        200: {
            "headers": {
                "Link": {
                    "description": 'The next page, as `<URL>; rel="next"`, while more nodes '
                    "follow a page asked for with `limit`.",
                    "schema": {"type": "string"},
                }
            }
        },
        **error_responses(404, 409, 422, 503),
    },
    summary="List nodes",
)
def list_nodes(
    request: Request,
    cm: Manager,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_NODE_PAGE, description="At most this many nodes (default: all)."),
    ] = None,
    after: Annotated[
        str | None,
        Query(
            pattern=NODE_ID_PATTERN,
            max_length=128,
            description="Start after the node with this id (the last id of the previous page).",
        ),
    ] = None,
    revision: Annotated[
        int | None,
        Query(
            ge=0,
            le=INT64_MAX,
            description="The registry as it was right after this audit revision (404 when "
            "there is no such revision yet, 409 when it cannot be rebuilt).",
        ),
    ] = None,
) -> Any:
    """Registered nodes in registration order, each as ``{"node", "state"}`` (the
    predecessor's reply). Without ``limit``/``after`` the whole registry, as its clients
    expect; page with ``limit``: while more nodes follow, the reply's ``Link`` header names the
    next page (``rel="next"``, RFC 8288), whose ``after`` is this page's last id (404 when that
    node no longer exists). ``revision``: as the registry was then (SPEC §10)."""
    if revision is not None:
        past = page_of(cm.nodes_at(revision), limit, after)
        return JSONResponse([_with_state(n) for n in past])
    if limit is None and after is None:
        return JSONResponse([_with_state(n) for n in cm.get_nodes()])
    size = limit or MAX_NODE_PAGE
    nodes = cm.get_nodes_page(limit=size, after=after)
    headers = {}
    if len(nodes) == size and cm.get_nodes_page(limit=1, after=nodes[-1].id):
        query = urlencode({"limit": size, "after": nodes[-1].id})
        headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    return JSONResponse([_with_state(n) for n in nodes], headers=headers)


@router.post(
    "",
    response_model=InferenceNodeConfig,
    responses=error_responses(400, 413, 415, 422, 503),
    summary="Add or replace one node",
    openapi_extra=NODE_BODY_DOC,
)
async def create_node(request: Request, cm: Manager) -> Any:
    """Register one node, or replace the node with its id (as the predecessor did when a
    node was posted again); 200 with the stored node."""
    raw = await request.body()
    content_type = request.headers.get("content-type")
    return await run_in_threadpool(lambda: stage_put_node(raw, content_type).run(cm))


@router.post(
    "/batch",
    status_code=201,
    response_model=list[InferenceNodeConfig],
    responses=error_responses(400, 409, 413, 415, 422, 503),
    summary="Add several nodes, all or nothing",
    openapi_extra=NODES_BODY_DOC,
)
async def create_nodes(request: Request, cm: Manager) -> Any:
    """Register up to 1,000 nodes in one transaction: all are stored or none (201)."""
    raw = await request.body()
    content_type = request.headers.get("content-type")
    return await run_in_threadpool(lambda: stage_add_nodes(raw, content_type).run(cm))


def _replace_all(cm: ConfigManager, raw: bytes, content_type: str | None) -> JSONResponse:
    nodes = parse_nodes(raw, content_type)
    cm.set_nodes(nodes)
    return JSONResponse([n.model_dump(mode="json") for n in cm.get_nodes()])


@router.put(
    "",
    response_model=list[InferenceNodeConfig],
    responses=error_responses(400, 409, 413, 415, 422, 503),
    summary="Replace the whole registry",
    openapi_extra=NODES_BODY_DOC,
)
async def replace_nodes(request: Request, cm: Manager) -> Any:
    """Replace every node with the list sent, in one transaction (after an automatic
    ``pre-set-nodes`` backup): the library's ``set_nodes``. A node that stays keeps its
    admin state unless the body sets ``is_enabled``. 200 with the registry."""
    raw = await request.body()
    return await run_in_threadpool(_replace_all, cm, raw, request.headers.get("content-type"))


@router.get(
    "/{node_id}",
    response_model=InferenceNodeConfig,
    responses=error_responses(404, 422, 503),
    summary="Get one node",
)
def get_node(node_id: NodeId, cm: Manager) -> Any:
    """One node, with its ``ETag``."""
    return _node_response(cm.get_node(node_id))


@router.put(
    "/{node_id}",
    response_model=InferenceNodeConfig,
    responses={
        201: {"description": "Created", "model": InferenceNodeConfig},
        **error_responses(400, 412, 413, 415, 422, 503),
    },
    summary="Replace (or create) one node",
    openapi_extra=REPLACEMENT_BODY_DOC,
)
async def replace_node(
    node_id: NodeId, request: Request, cm: Manager, if_match: IfMatch = ""
) -> Any:
    """Replace a node (200), or create it when the id is new (201); its id is the path's
    (an ``id`` in the body must equal it). With ``If-Match``, a node that changed since that
    read (or does not exist) gives 412 and nothing is written."""
    raw = await request.body()
    content_type = request.headers.get("content-type")
    return await run_in_threadpool(
        lambda: stage_put_node(raw, content_type, node_id, if_match).run(cm)
    )


@router.delete(
    "/{node_id}",
    response_model=InferenceNodeConfig,
    responses=error_responses(400, 404, 412, 422, 503),
    summary="Remove one node",
)
def delete_node(node_id: NodeId, cm: Manager, if_match: IfMatch = "") -> Any:
    """Remove a node; 200 with the removed node, 404 for an unknown id. (The predecessor
    answered ``true``, or ``false`` for an unknown id, both with 200: its clients ignore the
    body, and the removed node tells a script what is gone.)"""
    removed = cm.remove_node(node_id, if_match=parse_if_match(if_match))
    return JSONResponse(removed.model_dump(mode="json"))


@router.post(
    "/{node_id}/enable",
    response_model=NodeMessage,
    responses=error_responses(404, 422, 503),
    summary="Enable a node",
)
def enable_node(node_id: NodeId, cm: Manager) -> NodeMessage:
    """Mark a node enabled."""
    cm.set_node_enabled(node_id, True)
    return NodeMessage(message="node enabled successfully", node_id=node_id)


@router.post(
    "/{node_id}/disable",
    response_model=NodeMessage,
    responses=error_responses(404, 422, 503),
    summary="Disable a node",
)
def disable_node(node_id: NodeId, cm: Manager) -> NodeMessage:
    """Mark a node disabled."""
    cm.set_node_enabled(node_id, False)
    return NodeMessage(message="node disabled successfully", node_id=node_id)
