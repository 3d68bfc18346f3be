"""``/admin/v1/state/...``: every dynamic value read and written over HTTP (SPEC §15).

The routes are derived from :mod:`dapi_config.catalogue`, one ``GET`` per kind and a ``PUT``
(and ``DELETE``) where the kind has that write, not written per kind: a new kind in the
catalogue is served here without a line of its own. Every read carries an ``ETag``; ``PUT`` and
``DELETE`` honour ``If-Match`` (412, nothing written). Bodies are decoded and validated strictly
(no coercion, unknown fields refused) off the event loop. Besides: the schedule as a collection
(``POST``, ``DELETE`` one entry), seed rotation, worker-key creation and ``PATCH /state``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Optional

import pydantic
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from dapi_config.api.bodies import decode_json, refuse
from dapi_config.api.deps import Manager
from dapi_config.api.errors import ApiError, error_responses
from dapi_config.api.nodes import IfMatch, parse_if_match
from dapi_config.api.state import Seeds, revision_etag
from dapi_config.api.write_queue import Staged
from dapi_config.catalogue import KINDS, StateKind, as_is, document_value
from dapi_config.manager import ConfigManager
from dapi_config.manager.kinds import value_etag
from dapi_config.models import PRINTABLE_PATTERN, VALIDATION_ERRORS, NodeVersion, error_items

router = APIRouter(prefix="/state", tags=["state"])

MERGE_PATCH = "application/merge-patch+json"


#: The largest height a client sets over HTTP: 2**53 - 1, the largest integer a JSON number
#: carries exactly (clients in other languages read larger ones wrong; a chain needs
#: billions of years to get there). The library and the predecessor's files keep int64.
JSON_HEIGHT_MAX = 2**53 - 1
JsonHeight = Annotated[int, Field(ge=0, le=JSON_HEIGHT_MAX)]


@cache
def _strict(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` as a client sends it: fields it does not know refused (a typo is an error at
    the edge, as for nodes; the stored model keeps unknown fields a predecessor's file brought
    in), a height at most :data:`JSON_HEIGHT_MAX`."""
    if issubclass(model, pydantic.RootModel):
        return model
    namespace: dict[str, Any] = {
        "model_config": ConfigDict(**{**model.model_config, "extra": "forbid"})
    }
    height = model.model_fields.get("height")
    if height is not None:
        namespace["__annotations__"] = {"height": JsonHeight}
        if not height.is_required():
            namespace["height"] = height.default
    return type(f"{model.__name__}Input", (model,), namespace)


def parse_value(model: type[BaseModel], raw: bytes, content_type: str | None) -> BaseModel:
    """A request body as ``model``: JSON, validated strictly. Raises the API's 400/415/422."""
    data = decode_json(raw, content_type, what="the value")
    try:
        return _strict(model).model_validate(data, strict=True)
    except VALIDATION_ERRORS as exc:
        raise refuse(error_items(exc)) from None


def _value_response(value: BaseModel, status: int = 200) -> JSONResponse:
    dumped = value.model_dump(mode="json")
    return JSONResponse(dumped, status_code=status, headers={"ETag": value_etag(value)})


def stage_put(raw: bytes, content_type: str | None, if_match: str, *, kind: StateKind) -> Staged:
    """A new value of ``kind`` parsed and checked: its write and its reply."""
    value = parse_value(kind.input_model, raw, content_type)
    tags = parse_if_match(if_match)
    return Staged(lambda cm: cm.set_state_value(kind.name, value, if_match=tags), _value_response)


def state_writes() -> dict[str, tuple[str, Callable[..., Staged]]]:
    """The ``PUT`` of every writable kind, for the hot path (:mod:`.hot`): its path under
    ``/state`` -> (route name, ``stage(body, content_type, if_match)``)."""
    return {
        f"/{kind.path}": (f"set_{kind.operation}", functools.partial(stage_put, kind=kind))
        for kind in KINDS
        if kind.write is not None and not kind.collection
    }


def _add_routes(kind: StateKind) -> None:
    def read(cm: Manager) -> Any:
        return _value_response(cm.state_value(kind.name))

    read.__doc__ = f"{kind.summary}, with its ``ETag``."
    router.add_api_route(
        f"/{kind.path}",
        read,
        methods=["GET"],
        response_model=kind.model,
        responses=error_responses(503),
        summary=f"Get {kind.name}",
        name=f"get_{kind.operation}",
        operation_id=f"get_{kind.operation}",
    )
    if kind.write is not None and not kind.collection:

        async def replace(request: Request, cm: Manager, if_match: IfMatch = "") -> Any:
            raw = await request.body()
            content_type = request.headers.get("content-type")
            return await run_in_threadpool(
                lambda: stage_put(raw, content_type, if_match, kind=kind).run(cm)
            )

        replace.__doc__ = (
            f"Replace {kind.name} ({kind.summary.lower()}); 200 with the value stored and its "
            "``ETag``. With ``If-Match``, a value that changed since that read gives 412 and "
            "nothing is written."
        )
        router.add_api_route(
            f"/{kind.path}",
            replace,
            methods=["PUT"],
            response_model=kind.model,
            responses=error_responses(400, 412, 413, 415, 422, 503),
            summary=f"Set {kind.name}",
            name=f"set_{kind.operation}",
            operation_id=f"set_{kind.operation}",
            openapi_extra=body_doc(kind.input_model),
        )
    if kind.clear is not None:

        def clear(cm: Manager, if_match: IfMatch = "") -> Any:
            return _value_response(
                cm.clear_state_value(kind.name, if_match=parse_if_match(if_match))
            )

        clear.__doc__ = f"Clear {kind.name}; 200 with the value it reads as now."
        router.add_api_route(
            f"/{kind.path}",
            clear,
            methods=["DELETE"],
            response_model=kind.model,
            responses=error_responses(400, 412, 503),
            summary=f"Clear {kind.name}",
            name=f"clear_{kind.operation}",
            operation_id=f"clear_{kind.operation}",
        )


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``#/$defs/...`` references written in place: a request body's
    schema sits inside the OpenAPI document, where those references would not resolve."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = _inline(_strict(model).model_json_schema())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@cache
def _partial(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with every field optional (a merge patch names only what changes; null
    removes a member), unknown fields refused, types strict."""
    fields: dict[str, Any] = {}
    for name, field in _strict(model).model_fields.items():
        annotation: Any = field.annotation
        if field.metadata:
            annotation = Annotated[(annotation, *field.metadata)]
        fields[name] = (Optional[annotation], None)  # noqa: UP045 - a runtime-built type
    config = ConfigDict(extra="forbid", strict=True)
    return pydantic.create_model(f"{model.__name__}Patch", __config__=config, **fields)


def _patch_model(kind: StateKind) -> type[BaseModel]:
    if kind.collection:
        return _STRICT_SCHEDULE  # replaced whole
    if kind.from_document is not as_is:
        return _strict(kind.input_model)  # the height: a number
    return _partial(kind.input_model)


_ENTRY = _strict(NodeVersion)


class _ScheduleInput(pydantic.RootModel[list[_ENTRY]]):  # type: ignore[valid-type]
    """The schedule as a client sends it (its entries as :func:`_strict` makes them)."""


_STRICT_SCHEDULE: type[BaseModel] = _ScheduleInput


def _patch_schema() -> dict[str, Any]:
    """The body of ``PATCH /state``: the writable keys of ``GET /state``, each a part of its
    value, nothing else."""
    properties: dict[str, Any] = {}
    for kind in KINDS:
        schema = _inline(_patch_model(kind).model_json_schema())
        if kind.from_document is not as_is:
            schema = schema["properties"][kind.document_path[-1]]  # {"height": N} -> N
        if len(kind.document_path) == 1:
            properties[kind.document_path[0]] = schema
            continue
        group = properties.setdefault(
            kind.document_path[0],
            {"type": "object", "additionalProperties": False, "properties": {}},
        )
        group["properties"][kind.document_path[1]] = schema
    return {"type": "object", "additionalProperties": False, "properties": properties}


def check_patch(patch: Any) -> None:
    """Refuse (422) a patch whose parts are not strictly what the schema says: wrong types,
    unknown fields (the merge into the stored values is checked by the manager next)."""
    if not isinstance(patch, dict):
        raise refuse([{"field": "", "message": "expected a JSON object of state keys"}])
    problems: list[dict[str, Any]] = []
    for kind in KINDS:
        try:
            part = document_value(patch, kind)
        except (KeyError, TypeError):
            continue
        try:
            _patch_model(kind).model_validate(kind.from_document(part), strict=True)
        except VALIDATION_ERRORS as exc:
            for item in error_items(exc):
                path = (*kind.document_path, item["field"])
                problems.append({**item, "field": ".".join(p for p in path if p)})
    if problems:
        raise refuse(problems)


# The fixed paths first: /seeds/rotate must not be taken for a kind's path.


class WorkerKey(BaseModel):
    """The public half of a new worker key (the private half is never answered)."""

    worker_public: str


@router.post(
    "/worker-key",
    status_code=201,
    response_model=WorkerKey,
    responses=error_responses(503),
    summary="Create a new worker key",
    operation_id="create_worker_key",
)
def create_worker_key(cm: Manager) -> Any:
    """Generate and store a new Ed25519 worker key pair (the private key sealed); 201 with
    the public key."""
    return JSONResponse({"worker_public": cm.create_worker_key()}, status_code=201)


@router.post(
    "/seeds/rotate",
    response_model=Seeds,
    responses=error_responses(503),
    summary="Rotate the seeds (epoch change)",
    operation_id="rotate_seeds",
)
def rotate_seeds(cm: Manager) -> Any:
    """previous ← current ← upcoming, upcoming cleared, in one transaction; 200 with the
    three seeds."""
    cm.rotate_seeds()
    return JSONResponse(cm.state_summary()["seeds"])


@router.post(
    "/node-versions",
    response_model=list[NodeVersion],
    responses={
        201: {"description": "Scheduled", "model": list[NodeVersion]},
        **error_responses(400, 413, 415, 422, 503),
    },
    summary="Schedule a node version",
    operation_id="add_node_version",
    openapi_extra=body_doc(NodeVersion),
)
async def add_node_version(request: Request, cm: Manager) -> Any:
    """Schedule ``version`` at ``height``: 201 with the schedule, 200 when that pair was
    scheduled already."""
    raw = await request.body()
    content_type = request.headers.get("content-type")

    def add() -> JSONResponse:
        entry = parse_value(NodeVersion, raw, content_type)
        assert isinstance(entry, NodeVersion)
        added = cm.add_node_version(entry.height, entry.version)
        return _value_response(cm.state_value("node-versions"), 201 if added else 200)

    return await run_in_threadpool(add)


@router.delete(
    "/node-versions/{height}/{version}",
    response_model=list[NodeVersion],
    responses=error_responses(404, 422, 503),
    summary="Take a node version off the schedule",
    operation_id="remove_node_version",
)
def remove_node_version(
    height: Annotated[int, Path(ge=0, le=JSON_HEIGHT_MAX)],
    version: Annotated[str, Path(min_length=1, max_length=256, pattern=PRINTABLE_PATTERN)],
    cm: Manager,
) -> Any:
    """Remove ``version`` at ``height``: 200 with the schedule, 404 when it was not there."""
    if not cm.remove_node_version(height, version):
        raise ApiError(404, f"no version {version!r} is scheduled at height {height}", "not_found")
    return _value_response(cm.state_value("node-versions"))


for _kind in KINDS:
    _add_routes(_kind)


def _revision_of(if_match: str) -> int | None:
    tags = parse_if_match(if_match)
    if tags is None or "*" in tags:
        return None
    for tag in tags:
        text = tag.strip('"')
        if text.startswith("r") and text[1:].isdigit():
            return int(text[1:])
    return -1  # no tag of ours: it cannot match


def _patch(cm: ConfigManager, raw: bytes, content_type: str | None, if_match: str) -> Any:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != MERGE_PATCH:
        raise ApiError(
            415,
            f"send the patch with the header Content-Type: {MERGE_PATCH}",
            "unsupported_media_type",
        )
    patch = decode_json(raw, content_type, what="the patch")
    check_patch(patch)
    summary = cm.patch_state(patch, if_revision=_revision_of(if_match))
    return JSONResponse(summary, headers={"ETag": revision_etag(int(summary["revision"]))})


@router.patch(
    "",
    responses=error_responses(400, 412, 413, 415, 422, 503),
    summary="Change several state values at once",
    operation_id="patch_state",
    openapi_extra={
        "requestBody": {"required": True, "content": {MERGE_PATCH: {"schema": _patch_schema()}}}
    },
)
async def patch_state(request: Request, cm: Manager, if_match: IfMatch = "") -> Any:
    """A JSON merge patch (RFC 7396) of the dynamic state, in the keys of ``GET /state``
    (``{"height": 1200, "upgrade_plan": {...}, "seeds": {"upcoming": {...}}}``), applied in
    one transaction and refused whole on any bad part. ``If-Match``: the ``ETag`` of
    ``GET /state``; a state that changed since gives 412 and nothing is written. 200 with
    the state after it."""
    raw = await request.body()
    content_type = request.headers.get("content-type")
    return await run_in_threadpool(_patch, cm, raw, content_type, if_match)
