"""``/admin/v1/tokens`` and ``/admin/v1/whoami``: scoped API tokens (SPEC §11).

A new token is in the reply to its creation only (``Cache-Control: no-store``); the state keeps
its SHA-256. Revoking one takes effect on every replica at its next request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from dapi_config.access import Identity
from dapi_config.api.deps import Manager
from dapi_config.api.errors import error_responses
from dapi_config.api.kinds import body_doc, parse_value

router = APIRouter(tags=["tokens"])

_NO_STORE = {"Cache-Control": "no-store"}
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TokenName = Annotated[str, Path(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
RoleName = Literal["read", "write", "admin"]


class TokenRequest(BaseModel):
    """A token to create."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)
    role: RoleName


class TokenOut(BaseModel):
    """A token as listed: never the token itself."""

    name: str
    role: RoleName
    created_at: str
    last_used_at: str | None = None


class NewTokenOut(TokenOut):
    """A token just created: ``token`` is shown this once."""

    token: str


class WhoAmI(BaseModel):
    """The caller: its token's name (null for ``api.admin_token`` or an open API), its role,
    and the audit actor its changes are recorded under."""

    name: str | None
    role: RoleName
    actor: str


@router.get(
    "/whoami",
    response_model=WhoAmI,
    responses=error_responses(401),
    summary="Who the token is, and its role",
)
async def whoami(request: Request) -> Any:
    """The token's name and role (what the console shows and hides by)."""
    identity: Identity = request.state.identity
    return {"name": identity.name, "role": identity.role.label, "actor": identity.actor}


@router.get(
    "/tokens",
    response_model=list[TokenOut],
    responses=error_responses(401, 403, 501, 503),
    summary="List API tokens (never the tokens)",
)
def list_tokens(cm: Manager) -> Any:
    """Names, roles, creation and last use of every scoped token."""
    return JSONResponse([t.to_dict() for t in cm.list_tokens()])


@router.post(
    "/tokens",
    status_code=201,
    response_model=NewTokenOut,
    responses=error_responses(400, 401, 403, 409, 415, 422, 501, 503),
    summary="Create an API token (shown once)",
    openapi_extra=body_doc(TokenRequest),
)
async def create_token(request: Request, cm: Manager) -> Any:
    """Create a token with a role (``read``: GET only; ``write``: the state but not keys,
    tokens or backups; ``admin``: everything); 201 with the token, the only time it is shown.
    409 when the name is taken."""
    raw = await request.body()
    content_type = request.headers.get("content-type")

    def create() -> JSONResponse:
        body = parse_value(TokenRequest, raw, content_type)
        assert isinstance(body, TokenRequest)
        created = cm.create_token(body.name, body.role)
        return JSONResponse(created.to_dict(), status_code=201, headers=_NO_STORE)

    return await run_in_threadpool(create)


@router.delete(
    "/tokens/{name}",
    response_model=TokenOut,
    responses=error_responses(401, 403, 404, 422, 501, 503),
    summary="Revoke an API token",
)
def revoke_token(name: TokenName, cm: Manager) -> Any:
    """Delete the token: refused from the next request on, on every replica; 200 with what it
    was."""
    return JSONResponse(cm.revoke_token(name).to_dict())
