"""``/admin/v1/backups``: take an online backup, list the backups; ``/admin/v1/restore``:
bring the state back to a revision or a time (SPEC §10)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dapi_config.api.deps import Manager, Metrics
from dapi_config.api.errors import error_responses
from dapi_config.errors import ValidationError
from dapi_config.manager import INT64_MAX

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

    model_config = ConfigDict(extra="forbid")

    revision: int | None = Field(default=None, ge=0, le=INT64_MAX)
    time: AwareDatetime | None = None
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
    responses=error_responses(401, 409, 422, 501, 503),
    summary="Bring the state back to a revision or a time (point-in-time recovery)",
)
def restore_to(cm: Manager, body: RestoreRequest) -> Any:
    """Give ``revision`` or ``time`` (ISO 8601 with its zone). The current state is backed up
    first; the restore is one transaction and an audit entry naming the revision (revisions
    keep increasing). ``include_keys`` also brings back the nodes' security keys as the newest
    backup at or before then holds them (off: a key rotated since was rotated for a reason).
    409 when the state then cannot be rebuilt (the retention cut the trail it needs and no
    backup covers it); nothing changed."""
    if body.revision is not None and body.time is None:
        revision = body.revision
    elif body.time is not None and body.revision is None:
        revision = cm.revision_at_time(body.time)
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
