"""Probes: ``/livez`` (and its alias ``/healthz``) and ``/readyz``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dapi_config.api.deps import ReadinessDep
from dapi_config.api.errors import ErrorBody

router = APIRouter(tags=["health"])


class Live(BaseModel):
    """The process is up."""

    status: str = "ok"


class Integrity(BaseModel):
    """The last periodic integrity check of the state file (absent: none has run)."""

    ok: bool | None = Field(
        description="false: damage found; null: inconclusive (not finished in time, or the "
        "state could not be read)"
    )
    checked_at: float = Field(description="When it ran (POSIX seconds)")
    problems: list[str]


class Ready(BaseModel):
    """The state file is usable."""

    status: str = "ready"
    problems: list[str] = []
    integrity: Integrity | None = None


class NotReady(ErrorBody):
    """The state file is not usable; ``problems`` says why."""

    problems: list[str]
    integrity: Integrity | None = None


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
    response_model_exclude_none=True,  # no "integrity" until a check ran
    responses={503: {"model": NotReady, "description": "The state file is not usable"}},
    summary="Readiness",
)
def readyz(readiness: ReadinessDep) -> Any:
    """200 when the state can be used; 503 with the problems otherwise (within 2 s, whatever
    the state's database does)."""
    report = readiness.report_within()
    checked = readiness.integrity.last if readiness.integrity is not None else None
    integrity = (
        None
        if checked is None
        else Integrity(ok=checked.ok, checked_at=checked.checked_at, problems=checked.problems)
    )
    if report.ready:
        return Ready(integrity=integrity)
    body: dict[str, Any] = {
        "error": "not ready: " + "; ".join(report.problems),
        "code": "not_ready",
        "problems": report.problems,
    }
    if integrity is not None:
        body["integrity"] = integrity.model_dump()
    return JSONResponse(
        body,
        status_code=503,
        headers={"Retry-After": "5"},
    )


# Load balancers probe with HEAD (the same answer without its body); left out of the OpenAPI
# document, which describes each probe once, by its GET.
for _path, _probe in (("/livez", livez), ("/healthz", healthz), ("/readyz", readyz)):
    router.add_api_route(
        _path, _probe, methods=["HEAD"], include_in_schema=False, name=f"{_probe.__name__}_head"
    )
