"""``/admin/v1/backups``: take an online backup, list the backups (SPEC §10)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from dapi_config.api.deps import Manager, Metrics
from dapi_config.api.errors import error_responses

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
