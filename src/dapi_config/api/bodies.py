"""Node request bodies: parsed off the event loop, bounded before any per-element work.

FastAPI would decode and validate a body on the event loop, one error per bad element: a
200 KB array of integers cost seconds of CPU and a reply of megabytes while every other
request waited. Here the route reads the body and decodes and validates it in the thread pool,
in the same hand-off as the write (one trip off the event loop per request); a batch
longer than :data:`MAX_BATCH` is refused (422) before any element is looked at, and at most
:data:`MAX_ERRORS` problems are reported (the message says how many were left out).
Validation is strict, as the published schema says: ``"5000"`` or ``true`` is not a port.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from dapi_config._validation import json_number, node_inputs
from dapi_config.api.errors import ApiError
from dapi_config.api.limits import MAX_BATCH, MAX_ERRORS
from dapi_config.errors import ValidationError
from dapi_config.models import LEGACY_NOTES, VALIDATION_ERRORS, NodeInput, describe, error_items

log = logging.getLogger("dapi_config.api")

_JSON_TYPES = ("application/json", "application/merge-patch+json")


def decode_json(raw: bytes, content_type: str | None, *, what: str = "the node") -> Any:
    """A JSON request body (``what`` it should hold, for the message). Raises the API's 400
    (not JSON), 415 (not sent as JSON), 422 (empty)."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media not in _JSON_TYPES and not media.endswith("+json"):
        raise ApiError(
            415,
            "send the body as JSON with the header Content-Type: application/json",
            "unsupported_media_type",
        )
    if not raw.strip():
        raise ValidationError(
            f"invalid request: body: required (send {what} as JSON)",
            [{"field": "body", "message": "required"}],
        )
    try:
        return json.loads(raw, parse_float=json_number, parse_constant=_no_constant)
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


def refuse(items: list[dict[str, Any]]) -> ValidationError:
    """The 422 for ``items`` (at most ``MAX_ERRORS`` of them shown)."""
    shown = items[:MAX_ERRORS]
    left_out = len(items) - len(shown)
    more = f" (and {left_out} more problems left out)" if left_out else ""
    return ValidationError(f"invalid request: {describe(shown)}{more}", shown)


def parse_node(raw: bytes, content_type: str | None, path_id: str | None = None) -> NodeInput:
    """One node from a request body (for ``PUT /nodes/{id}``, ``path_id``: the body's ``id``
    may be left out, and must equal it when given). Raises :class:`ApiError` (400, 415) or
    :class:`ValidationError` (422, at most :data:`MAX_ERRORS` problems)."""
    data = decode_json(raw, content_type)
    if path_id is not None and isinstance(data, dict):
        given = data.setdefault("id", path_id)
        if given != path_id:
            raise ValidationError(
                f"id: the body's id {given!r} differs from the path's {path_id!r}",
                [{"field": "id", "message": "must equal the id in the path", "input": given}],
            )
    notes: list[str] = []
    try:
        node = NodeInput.model_validate(data, strict=True, context={LEGACY_NOTES: notes})
    except VALIDATION_ERRORS as exc:
        raise refuse(error_items(exc)) from None
    _log_taken_as_before(notes, [node])
    return node


def parse_nodes(raw: bytes, content_type: str | None) -> list[NodeInput]:
    """A JSON array of nodes, at most :data:`MAX_BATCH` (422 ``batch_too_large`` beyond,
    before any element is validated). Raises as :func:`parse_node`."""
    data = decode_json(raw, content_type)
    if not isinstance(data, list):
        raise refuse([{"field": "", "message": "expected a JSON array of nodes"}])
    if len(data) > MAX_BATCH:
        # 422, not 413: the body is within the size limit; it breaks the schema's maxItems.
        raise ApiError(
            422,
            f"a batch takes at most {MAX_BATCH} nodes, got {len(data)}; split it",
            "batch_too_large",
        )
    notes: list[str] = []
    nodes, problems = node_inputs(data, str, notes)
    if problems:
        raise refuse(problems)
    _log_taken_as_before(notes, nodes)
    return nodes


def _log_taken_as_before(notes: list[str], nodes: list[NodeInput]) -> None:
    """Say, once per request, what was taken as the predecessor's API took it."""
    if notes:
        log.warning(
            "node(s) %s: %s; taken as the predecessor's admin API took it (fix it when "
            "convenient: such a node is not reachable the usual way)",
            ", ".join(n.id for n in nodes),
            "; ".join(notes),
        )


_NODE_REF = {"$ref": "#/components/schemas/NodeInput"}
_REPLACEMENT_REF = {"$ref": "#/components/schemas/NodeReplacement"}
#: ``openapi_extra`` of the routes that take one node, and of the batch route.
NODE_BODY_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _NODE_REF}}}
}
#: ``openapi_extra`` of ``PUT /nodes/{node_id}``: the node without its id (the path's).
REPLACEMENT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _REPLACEMENT_REF}},
    }
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
    replacement = copy.deepcopy(schema)
    del replacement["properties"]["id"]
    replacement["required"] = [r for r in replacement.get("required", []) if r != "id"]
    replacement["title"] = "NodeReplacement"
    replacement["description"] = (
        "A node for PUT /admin/v1/nodes/{node_id}: its id is the path's (an `id` in the body "
        "must equal it)."
    )
    schemas["NodeReplacement"] = replacement
    _key_patterns_as_property_names(document)
    return document


def _key_patterns_as_property_names(node: Any) -> None:
    """Pydantic writes a dict whose keys have a pattern (model names) as ``patternProperties``,
    which leaves keys that do not match it unconstrained; the rule is "every key matches", i.e.
    ``propertyNames`` with the pattern and ``additionalProperties`` for the values."""
    if isinstance(node, list):
        for item in node:
            _key_patterns_as_property_names(item)
        return
    if not isinstance(node, dict):
        return
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
        ((pattern, values),) = patterns.items()
        del node["patternProperties"]
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
        node["additionalProperties"] = values
    for value in node.values():
        _key_patterns_as_property_names(value)
