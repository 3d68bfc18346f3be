"""Probes: ``/livez`` (and its alias ``/healthz``) and ``/readyz``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from dapi_config.api.deps import ReadinessDep
from dapi_config.api.errors import ErrorBody

router = APIRouter(tags=["health"])


class Live(BaseModel):
    """The process is up."""

    status: str = "ok"


class Ready(BaseModel):
    """The state file is usable."""

    status: str = "ready"
    problems: list[str] = []


class NotReady(ErrorBody):
    """The state file is not usable; ``problems`` says why."""

    problems: list[str]


@router.get("/livez", response_model=Live, summary="Liveness")
async def livez() -> Live:
    """200 while the process serves requests (touches no file; on the event loop, so it also
    says the loop is not stuck)."""
    return Live()


@router.get("/healthz", response_model=Live, summary="Liveness (alias of /livez)")
async def healthz() -> Live:
    """Alias of ``/livez``."""
    return Live()


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "The state file is not usable"}},
    summary="Readiness",
)
def readyz(readiness: ReadinessDep) -> Any:
    """200 when the state can be used; 503 with the problems otherwise (within 2 s, whatever
    the state's database does)."""
    report = readiness.report_within()
    if report.ready:
        return Ready()
    return JSONResponse(
        {
            "error": "not ready: " + "; ".join(report.problems),
            "code": "not_ready",
            "problems": report.problems,
        },
        status_code=503,
        headers={"Retry-After": "5"},
    )
