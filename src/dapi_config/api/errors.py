"""The one table from errors to HTTP statuses, and the handlers that apply it.

Every error response has the body ``{"error": "<human message>", "code": "<machine_code>"}``,
plus ``errors`` (``[{field, message, input?}]``) for bad input and ``node_id`` where one is
known. Handlers are registered by :func:`install_error_handlers`; routes just raise.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from dapi_config.errors import (
    BackupError,
    ConfigError,
    DapiConfigError,
    DuplicateNodeError,
    HistoryUnavailableError,
    MasterKeyError,
    NodeNotFoundError,
    NotSupportedError,
    PreconditionFailedError,
    RevisionNotFoundError,
    SecurityKeyExistsError,
    SecurityKeyNotFoundError,
    StateUnavailableError,
    TokenExistsError,
    TokenNotFoundError,
    ValidationError,
)
from dapi_config.models import describe

log = logging.getLogger("dapi_config.api")

#: Product error class -> HTTP status. The most specific class in an error's MRO wins.
ERROR_STATUS: dict[type[DapiConfigError], int] = {
    ValidationError: 422,
    ConfigError: 400,
    NodeNotFoundError: 404,
    DuplicateNodeError: 409,
    PreconditionFailedError: 412,
    HistoryUnavailableError: 409,
    RevisionNotFoundError: 404,
    SecurityKeyNotFoundError: 404,
    SecurityKeyExistsError: 409,
    TokenNotFoundError: 404,
    TokenExistsError: 409,
    # The service cannot open its own secrets: its configuration is wrong, not the request.
    MasterKeyError: 500,
    StateUnavailableError: 503,
    # The state backend cannot do this at all (no backups or audit in yaml mode): retrying
    # will not help, so not 503.
    NotSupportedError: 501,
    # A backup fails for the same reasons a write does (full disk, damaged file): retry later.
    BackupError: 503,
    DapiConfigError: 500,
}

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_S = 5

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    501: "not_supported",
    503: "service_unavailable",
}


class ErrorItem(BaseModel):
    """One problem with the input."""

    field: str
    message: str
    input: Any = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="A message for people.")
    code: str = Field(description="A stable machine-readable code.")
    errors: list[ErrorItem] | None = Field(
        default=None, description="Bad input: one item per offending field."
    )
    node_id: str | None = None


class ApiError(Exception):
    """An HTTP-level error with no product counterpart (413, malformed JSON, ...)."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _HTTP_CODES.get(status, "error")
        self.extra = extra


def status_for(exc: DapiConfigError) -> int:
    """The HTTP status of a product error (most specific class in the table)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def error_response(
    status: int,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A JSON error response with the product's body shape."""
    body: dict[str, Any] = {"error": message, "code": code}
    body.update({k: v for k, v in extra.items() if v is not None})
    plain = _encodable(jsonable_encoder(body, custom_encoder={bytes: repr}))
    return JSONResponse(plain, status_code=status, headers=headers)


def _encodable(value: Any) -> Any:
    """``value`` with every string made UTF-8 encodable: bad input echoed back (a lone
    surrogate from a ``\\ud800`` escape) must not break the error response itself."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


def product_error_response(exc: DapiConfigError) -> JSONResponse:
    """The response for a product error, per :data:`ERROR_STATUS`."""
    status = status_for(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationError):
        extra["errors"] = [_plain_item(i) for i in exc.errors]
    node_id = getattr(exc, "node_id", None)
    if isinstance(node_id, str):
        extra["node_id"] = node_id
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    if status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    return error_response(status, exc.message, exc.code, headers=headers, **extra)


def api_error_response(exc: ApiError) -> JSONResponse:
    """The response for an :class:`ApiError`."""
    return error_response(exc.status, exc.message, exc.code, **exc.extra)


def _plain_item(item: dict[str, Any]) -> dict[str, Any]:
    out = {"field": str(item.get("field", "")), "message": str(item.get("message", ""))}
    if "input" in item:
        value = item["input"]
        plain = isinstance(value, (str, int, bool)) or (
            isinstance(value, float) and math.isfinite(value)
        )
        # Anything else (bytes, inf/nan, objects) as text: the body must stay valid JSON.
        out["input"] = value if plain else repr(value)
    return out


def request_validation_items(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's validation errors as ``[{field, message, input?}]`` (field without ``body``)."""
    items: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("function-after", "function-before")]
        where = loc[0] if loc else ""
        parts = loc[1:] if where == "body" else loc
        field = ".".join(parts) if parts else where
        item: dict[str, Any] = {"field": field, "message": str(err.get("msg", "invalid"))}
        if err.get("type") != "missing" and "input" in err:
            item["input"] = err["input"]
        items.append(_plain_item(_shorten(item)))
    return items


def _shorten(item: dict[str, Any]) -> dict[str, Any]:
    value = item.get("input")
    if isinstance(value, (dict, list)):
        text = repr(value)
        item["input"] = text if len(text) <= 80 else text[:77] + "..."
    elif isinstance(value, str) and len(value) > 80:
        item["input"] = value[:77] + "..."
    return item


def _is_raw_body(err: Any) -> bool:
    loc = tuple(err.get("loc", ()))
    return loc[:1] == ("body",) and len(loc) == 1 and isinstance(err.get("input"), bytes)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the product's JSON body."""

    @app.exception_handler(DapiConfigError)
    async def _product(_: Request, exc: DapiConfigError) -> JSONResponse:
        return product_error_response(exc)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = next(e for e in errors if e.get("type") == "json_invalid")
            reason = (detail.get("ctx") or {}).get("error", "invalid JSON")
            return error_response(400, f"request body is not valid JSON: {reason}", "invalid_json")
        if any(_is_raw_body(e) for e in errors):
            # FastAPI parses JSON only for JSON (or absent) content types; curl -d sends a form.
            return error_response(
                415,
                "send the body as JSON with the header Content-Type: application/json",
                "unsupported_media_type",
            )
        items = request_validation_items(exc)
        return error_response(
            422, f"invalid request: {describe(items)}", "validation_error", errors=items
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        code = _HTTP_CODES.get(exc.status_code, "error")
        if exc.status_code == 400 and "parsing the body" in message:
            # FastAPI's own wording for a body it cannot decode (e.g. not UTF-8).
            message, code = "request body is not valid JSON (cannot decode it)", "invalid_json"
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; a path served
            # by several routes (GET and POST /nodes) allows all of theirs.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(exc.status_code, message, code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(request.method, request.url.path, exc)


def unexpected_error_response(method: str, path: str, exc: BaseException) -> JSONResponse:
    """A bug, never bad input: the trace in the log, nothing internal for the client."""
    log.error("unexpected error on %s %s", method, path, exc_info=exc)
    return error_response(500, "internal error; see the service log", "internal_error")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves on the request's path (from the app's
    OpenAPI paths: routers nest, the document lists them all)."""
    matching = [
        (template.count("{"), operations)
        for template, operations in request.app.openapi()["paths"].items()
        if route_pattern(template).match(request.url.path)
    ]
    # The most specific templates win: /nodes/batch is the batch route, not /nodes/{node_id}.
    fewest = min((count for count, _ in matching), default=0)
    methods = {m.upper() for count, ops in matching if count == fewest for m in ops}
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return sorted(methods)


@functools.lru_cache(maxsize=256)
def route_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the paths of a route template (``/nodes/{node_id}``)."""
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")


#: OpenAPI ``responses=`` entries for the error statuses a route can return.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI response declarations (model :class:`ErrorBody`) for ``statuses``."""
    descriptions = {
        400: "Malformed request (e.g. the body is not JSON)",
        401: "Missing, wrong or revoked token",
        403: "The token's role may not call this route, or a browser sent this state-changing "
        "request from another origin (refused: CSRF)",
        404: "No such node (or, for key routes, the node has no security key), or no such "
        "revision yet",
        409: "Duplicate node id, the node already has a security key, or the state at that "
        "revision cannot be rebuilt",
        415: "The body is not sent as JSON",
        412: "Stale If-Match: the node changed since it was read",
        413: "Request body too large",
        422: "Invalid input; `errors` names each field",
        501: "This state backend cannot do that (the message says what to use)",
        503: "The state file cannot be used right now",
    }
    return {s: {"model": ErrorBody, "description": descriptions.get(s, "Error")} for s in statuses}
