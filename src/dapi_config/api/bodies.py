"""Node request bodies: parsed off the event loop, bounded before any per-element work.

FastAPI would decode and validate a body on the event loop, one error per bad element: a
200 KB array of integers cost seconds of CPU and a reply of megabytes while every other
request waited. Here the body is read, then decoded and validated in the thread pool; a batch
longer than :data:`MAX_BATCH` is refused before any element is looked at, and at most
:data:`MAX_ERRORS` problems are reported (the message says how many were left out).
Validation is strict, as the published schema says: ``"5000"`` or ``true`` is not a port.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import pydantic
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from dapi_config._validation import describe, error_items
from dapi_config.api.errors import ApiError
from dapi_config.api.limits import MAX_BATCH, MAX_ERRORS
from dapi_config.errors import ValidationError
from dapi_config.models import NodeInput

_JSON_TYPES = ("application/json", "application/merge-patch+json")


def _decode(raw: bytes, content_type: str | None) -> Any:
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media not in _JSON_TYPES and not media.endswith("+json"):
        raise ApiError(
            415,
            "send the body as JSON with the header Content-Type: application/json",
            "unsupported_media_type",
        )
    if not raw.strip():
        raise ValidationError(
            "invalid request: body: required (send the node as JSON)",
            [{"field": "body", "message": "required"}],
        )
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid JSON (not UTF-8)", "invalid_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            "invalid_json",
        ) from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", "invalid_json") from None
    except ValueError as exc:  # an integer of thousands of digits, NaN, Infinity
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _refuse(items: list[dict[str, Any]]) -> ValidationError:
    shown = items[:MAX_ERRORS]
    left_out = len(items) - len(shown)
    more = f" (and {left_out} more problems left out)" if left_out else ""
    return ValidationError(f"invalid request: {describe(shown)}{more}", shown)


def parse_node(raw: bytes, content_type: str | None) -> NodeInput:
    """One node from a request body. Raises :class:`ApiError` (400, 415) or
    :class:`ValidationError` (422, at most :data:`MAX_ERRORS` problems)."""
    data = _decode(raw, content_type)
    try:
        return NodeInput.model_validate(data, strict=True)
    except pydantic.ValidationError as exc:
        raise _refuse(error_items(exc)) from None


def parse_nodes(raw: bytes, content_type: str | None) -> list[NodeInput]:
    """A JSON array of nodes, at most :data:`MAX_BATCH` (413 beyond, before any element is
    validated). Raises as :func:`parse_node`."""
    data = _decode(raw, content_type)
    if not isinstance(data, list):
        raise _refuse([{"field": "", "message": "expected a JSON array of nodes"}])
    if len(data) > MAX_BATCH:
        raise ApiError(
            413,
            f"a batch takes at most {MAX_BATCH} nodes, got {len(data)}; split it",
            "batch_too_large",
        )
    nodes: list[NodeInput] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(data):
        try:
            nodes.append(NodeInput.model_validate(item, strict=True))
        except pydantic.ValidationError as exc:
            problems.extend(error_items(exc, prefix=str(index)))
    if problems:
        raise _refuse(problems)
    return nodes


async def _node_body(request: Request) -> NodeInput:
    raw = await request.body()
    return await run_in_threadpool(parse_node, raw, request.headers.get("content-type"))


async def _nodes_body(request: Request) -> list[NodeInput]:
    raw = await request.body()
    return await run_in_threadpool(parse_nodes, raw, request.headers.get("content-type"))


NodeBody = Annotated[NodeInput, Depends(_node_body)]
NodesBody = Annotated[list[NodeInput], Depends(_nodes_body)]

_NODE_REF = {"$ref": "#/components/schemas/NodeInput"}
#: ``openapi_extra`` of the routes that take one node, and of the batch route.
NODE_BODY_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _NODE_REF}}}
}
NODES_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": _NODE_REF, "maxItems": MAX_BATCH}
            }
        },
    }
}


def add_body_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Put the schema of :class:`NodeInput` (and the models it uses) into an OpenAPI
    ``document``'s components, where :data:`NODE_BODY_DOC` points."""
    schema = NodeInput.model_json_schema(
        ref_template="#/components/schemas/{model}", mode="validation"
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas["NodeInput"] = schema
    return document
