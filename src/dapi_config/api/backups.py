"""``/admin/v1/backups``: take an online backup, list the backups; ``/admin/v1/restore``:
bring the state back to a revision or a time (SPEC §10)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from dapi_config.api.bodies import decode_json, refuse
from dapi_config.api.deps import Manager, Metrics
from dapi_config.api.errors import error_responses
from dapi_config.api.kinds import body_doc
from dapi_config.errors import ConfigError, ValidationError
from dapi_config.manager import INT64_MAX, ConfigManager
from dapi_config.models import VALIDATION_ERRORS, error_items
from dapi_config.settings import parse_time

router = APIRouter(tags=["backups"])


class Backup(BaseModel):
    """One backup file and the result of its check."""

    path: str
    created_at: datetime
    age_seconds: float
    size: int
    schema_version: int
    revision: int
    reason: str
    ok: bool
    problem: str | None = None


@router.post(
    "/backups",
    status_code=201,
    response_model=Backup,
    responses=error_responses(401, 501, 503),
    summary="Take a backup",
)
def create_backup(cm: Manager, metrics: Metrics) -> Any:
    """Take a verified online backup of the state file into ``<state dir>/backups``.

    Safe while writers run. 503 when it cannot be written (full disk, damaged state file).
    """
    info = cm.backup()
    metrics.last_backup_timestamp.set(info.created_at.timestamp())
    return JSONResponse(info.to_dict(), status_code=201)


@router.get(
    "/backups",
    response_model=list[Backup],
    responses=error_responses(401, 501, 503),
    summary="List backups",
)
def list_backups(cm: Manager) -> Any:
    """The backups in ``<state dir>/backups``, newest first, each checked (``ok``)."""
    return JSONResponse([b.to_dict() for b in cm.list_backups()])


class RestoreRequest(BaseModel):
    """Where to bring the state back to: a revision, or the newest revision at or before a
    time; ``dry_run`` only says what would change."""

    model_config = ConfigDict(
        extra="forbid",
        # Exactly one of the two, given (not null).
        json_schema_extra={
            "oneOf": [
                {"required": ["revision"], "properties": {"revision": {"type": "integer"}}},
                {"required": ["time"], "properties": {"time": {"type": "string"}}},
            ]
        },
    )

    revision: int | None = Field(default=None, ge=0, le=INT64_MAX)
    time: str | None = Field(
        default=None,
        max_length=64,
        description="ISO 8601 with its zone (2026-12-07T13:40:00Z)",
        json_schema_extra={"format": "date-time"},
    )
    include_keys: bool = False
    dry_run: bool = False


class RestoreReply(BaseModel):
    """A restore to a revision: the revision brought back, the restore's own revision (None for
    a dry run) and one line per part it changed (or would)."""

    restored_revision: int
    revision: int | None
    changes: list[str]


@router.post(
    "/restore",
    response_model=RestoreReply,
    responses=error_responses(400, 401, 404, 409, 413, 415, 422, 501, 503),
    summary="Bring the state back to a revision or a time (point-in-time recovery)",
    openapi_extra=body_doc(RestoreRequest),
)
async def restore_to(request: Request, cm: Manager) -> Any:
    """Give ``revision`` or ``time`` (ISO 8601 with its zone). The current state is backed up
    first; the restore is one transaction and an audit entry naming the revision (revisions
    keep increasing). ``include_keys`` also brings back the nodes' security keys as the newest
    backup at or before then holds them (off: a key rotated since was rotated for a reason).
    404 for a revision not reached yet; 409 when the state then cannot be rebuilt (the
    retention cut the trail it needs and no backup covers it); nothing changed."""
    raw = await request.body()
    return await run_in_threadpool(_restore_to, cm, raw, request.headers.get("content-type"))


def _restore_to(cm: ConfigManager, raw: bytes, content_type: str | None) -> RestoreReply:
    data = decode_json(raw, content_type, what="the revision or time")
    try:
        body = RestoreRequest.model_validate(data, strict=True)
    except VALIDATION_ERRORS as exc:
        raise refuse(error_items(exc)) from None
    if body.revision is not None and body.time is None:
        revision = body.revision
    elif body.time is not None and body.revision is None:
        revision = cm.revision_at_time(_aware(body.time))
    else:
        raise ValidationError(
            "give revision or time",
            [{"field": "revision", "message": "give exactly one of revision and time"}],
        )
    changes = cm.preview_restore_to_revision(revision)
    restored = (
        None if body.dry_run else cm.restore_to_revision(revision, include_keys=body.include_keys)
    )
    return RestoreReply(restored_revision=revision, revision=restored, changes=changes)


def _aware(text: str) -> datetime:
    try:
        return parse_time(text, "time")
    except ConfigError as exc:  # a body's field: 422, as every other bad field
        raise ValidationError(
            str(exc), [{"field": "time", "message": "expected ISO 8601 with its zone"}]
        ) from None
