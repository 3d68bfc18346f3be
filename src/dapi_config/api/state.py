"""``/admin/v1/state``, ``/admin/v1/config``, ``/admin/v1/config/export`` and
``/admin/v1/export/db``: read-only views of the whole state, secrets always redacted."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from dapi_config.api.deps import Manager, ReadinessDep
from dapi_config.api.errors import error_responses
from dapi_config.export import render_legacy_yaml
from dapi_config.health import Overview, overview
from dapi_config.manager import INT64_MAX
from dapi_config.models import (
    BandwidthParamsCache,
    NodeVersion,
    SeedInfo,
    UpgradePlan,
    ValidationParamsCache,
)

router = APIRouter(tags=["state"])


class Seeds(BaseModel):
    """The three epoch seeds."""

    current: SeedInfo
    previous: SeedInfo
    upcoming: SeedInfo


class StateSummary(BaseModel):
    """The dynamic state (``ConfigManager.state_summary()``)."""

    model_config = ConfigDict(extra="allow")

    height: int
    current_node_version: str
    node_versions: list[NodeVersion]
    seeds: Seeds
    validation_params: ValidationParamsCache
    bandwidth_params: BandwidthParamsCache
    upgrade_plan: UpgradePlan
    node_count: int
    revision: int


@router.get(
    "/state",
    response_model=StateSummary,
    responses=error_responses(404, 409, 422, 503),
    summary="Dynamic state",
)
def get_state(
    cm: Manager,
    revision: Annotated[
        int | None,
        Query(
            ge=0,
            le=INT64_MAX,
            description="The state as it was right after this audit revision (no ETag: it "
            "guards changes of the current state only; 404 when there is no such revision "
            "yet, 409 when it cannot be rebuilt).",
        ),
    ] = None,
) -> Any:
    """Height, node version, version schedule, seeds, parameter caches, upgrade plan, node count
    and the latest audit revision; its ``ETag`` (the revision) guards ``PATCH /state``.
    ``revision``: as it was then (SPEC §10)."""
    if revision is not None:
        return JSONResponse(cm.state_summary_at(revision))
    summary = cm.state_summary()
    return JSONResponse(summary, headers={"ETag": revision_etag(int(summary["revision"]))})


def revision_etag(revision: int) -> str:
    """The ``ETag`` of ``GET /state``: the latest audit revision."""
    return f'"r{revision}"'


@router.get("/overview", response_model=Overview, summary="Overview (health at a glance)")
def get_overview(cm: Manager, readiness: ReadinessDep) -> Any:
    """Readiness and its problems, height, node version and the next scheduled one, where the
    state lives (a URL without its password), and when the last backup and the last export were
    written (POSIX seconds, null: never). Answers 200 even when the state is not ready."""
    return JSONResponse(overview(cm, readiness).model_dump(mode="json"))


@router.get(
    "/config/export",
    responses={
        200: {
            "description": "The merged configuration (legacy single-file layout), redacted",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "object"}},
            },
        },
        **error_responses(422, 503),
    },
    summary="Full config export (redacted)",
)
def export_config(
    cm: Manager,
    fmt: Annotated[
        Literal["json", "yaml"],
        Query(alias="format", description="json (default) or yaml (the exported file's text)"),
    ] = "json",
) -> Response:
    """The merged static + dynamic configuration in the predecessor's layout, as written to
    ``api-config-full.yaml``; secrets are always redacted here."""
    data = cm.export_full_config(include_secrets=False)
    if fmt == "yaml":
        return Response(render_legacy_yaml(data), media_type="application/yaml")
    return JSONResponse(data)


@router.get(
    "/config",
    responses={
        200: {
            "description": "The merged configuration, redacted",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **error_responses(503),
    },
    summary="Merged configuration (redacted)",
)
def get_config(cm: Manager) -> Any:
    """The merged static + dynamic configuration (the later predecessor's ``GET
    /admin/v1/config``), secrets redacted."""
    return JSONResponse(cm.export_full_config(include_secrets=False))


@router.get(
    "/export/db",
    responses={
        200: {
            "description": "Every state table as rows, secrets redacted",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **error_responses(501, 503),
    },
    summary="Every state table as JSON (redacted)",
)
def export_db(cm: Manager) -> Any:
    """Every table of the state file (the later predecessor's ``GET /admin/v1/export/db``):
    ``{"tables": {name: [row, ...]}}``; secret columns hold ``<redacted>``. 503 in
    ``API_STATE_MODE=yaml`` (no database)."""
    return JSONResponse({"tables": cm.export_tables()})
