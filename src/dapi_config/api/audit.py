"""``/admin/v1/audit``: the audit trail, paged by revision (§11).

A poller keeps the ``next_since`` of each reply and passes it as ``since`` next time; it sees
every change once, in commit order. With ``wait=SECONDS`` the request is a watch: it answers as
soon as a newer revision exists (or after that long, empty).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dapi_config.api.deps import Manager
from dapi_config.api.errors import error_responses
from dapi_config.manager import AUDIT_PAGE_MAX
from dapi_config.models import PRINTABLE_PATTERN

router = APIRouter(tags=["audit"])

#: Longest ``wait`` one request may ask for (a watcher asks again).
MAX_WAIT_S = 60.0
#: How often a waiting request looks for a new revision (one indexed MAX() read).
WATCH_POLL_S = 0.05


class AuditRecord(BaseModel):
    """One state change. Secrets appear only as ``sha256:...`` fingerprints."""

    revision: int = Field(description="Monotonic, never reused")
    at: str = Field(description="UTC time, ISO 8601")
    actor: str = Field(description="api, cli, library or migration")
    action: str
    target: str
    old_value: Any = None
    new_value: Any = None
    undone_by: int | None = Field(
        default=None,
        description="The revision of the restore that undid this change (null: not undone)",
    )


class AuditPage(BaseModel):
    """A page of the audit trail."""

    entries: list[AuditRecord]
    next_since: int = Field(description="Pass as `since` to get the changes after this page")
    latest_revision: int = Field(description="The newest revision when this page was read")


@router.get(
    "/audit",
    response_model=AuditPage,
    responses=error_responses(401, 422, 501, 503),
    summary="Read the audit trail",
)
async def read_audit(
    request: Request,
    cm: Manager,
    *,
    since: Annotated[int, Query(ge=0, description="Only revisions after this one")] = 0,
    limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX, description="Page size")] = 100,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Seconds to wait for a change after `since` when there is none yet "
            "(a watch: the reply comes as soon as one commits)",
        ),
    ] = 0,
    actor: Annotated[
        str | None,
        Query(
            max_length=1024,
            pattern=PRINTABLE_PATTERN,
            description="Only this actor's changes (api:NAME)",
        ),
    ] = None,
    action: Annotated[
        str | None,
        Query(
            max_length=1024, pattern=PRINTABLE_PATTERN, description="Only this action (remove_node)"
        ),
    ] = None,
    target: Annotated[
        str | None,
        Query(
            max_length=1024,
            pattern=PRINTABLE_PATTERN,
            description="Only changes of this target (a node id)",
        ),
    ] = None,
) -> Any:
    """Changes with ``revision > since``, oldest first, at most ``limit``, optionally only
    those of one ``actor``, ``action`` or ``target``; with ``wait``, the reply waits (up to
    that many seconds) until there is at least one."""

    def read(after: int) -> list[Any]:
        return cm.get_audit(since=after, limit=limit, actor=actor, action=action, target=target)

    entries = await run_in_threadpool(read, since)
    deadline = time.monotonic() + wait
    while not entries and time.monotonic() < deadline:
        # The wait happens on the event loop, not in a worker thread: many watchers are cheap.
        await asyncio.sleep(WATCH_POLL_S)
        if await request.is_disconnected():
            break  # the watcher left (a closed console tab): stop polling for it
        if await run_in_threadpool(cm.latest_revision) > since:
            entries = await run_in_threadpool(read, since)
    latest = await run_in_threadpool(cm.latest_revision)
    return JSONResponse(
        {
            "entries": [asdict(e) for e in entries],
            "next_since": entries[-1].revision if entries else since,
            "latest_revision": latest,
        }
    )
