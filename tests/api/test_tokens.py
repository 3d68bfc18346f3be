"""Scoped API tokens (SPEC §11) through the real server: every role against every route of the
OpenAPI document, revocation seen by another replica at its next request, the audit actor, the
digest-only storage, restores that keep the current tokens, and slowed repeated failures."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from dapi_config import ConfigManager
from dapi_config.access import Role
from dapi_config.api.auth import FailureThrottle
from dapi_config.api.roles import ROUTE_ROLES
from dapi_config.errors import (
    ConfigError,
    NotSupportedError,
    TokenExistsError,
    TokenNotFoundError,
    ValidationError,
)
from tests.api.conftest import StartServer
from tests.conftest import raw_rows, run_cli

pytestmark = pytest.mark.both_backends

ADMIN = "/admin/v1"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, concrete path, operationId) of every admin operation of ``document``; path
    parameters filled with values no route finds (so an allowed call changes little)."""
    fill = {"node_id": "no-such-node", "height": "7", "version": "v0", "name": "no-such-token"}
    found = []
    for template, operations in document["paths"].items():
        if not template.startswith(ADMIN):
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)], template)
        for method, operation in operations.items():
            found.append((method.upper(), path, operation["operationId"]))
    return found


def test_every_admin_route_of_the_document_has_a_role(
    manager: ConfigManager, start_server: StartServer
) -> None:
    server = start_server(manager)
    document = server.client.get("/openapi.json").json()
    named = {operation for _, _, operation in _operations(document)}
    assert named == set(ROUTE_ROLES), (named - set(ROUTE_ROLES), set(ROUTE_ROLES) - named)


def test_every_role_against_every_route(manager: ConfigManager, start_server: StartServer) -> None:
    tokens = {role: manager.create_token(f"t-{role.label}", role).token for role in Role}
    server = start_server(manager)
    document = server.client.get("/openapi.json").json()
    assert "adminToken" in document["components"]["securitySchemes"]
    operations = _operations(document)
    assert len(operations) == len(ROUTE_ROLES)
    for method, path, operation in operations:
        needed = ROUTE_ROLES[operation]
        unauthenticated = server.client.request(method, path)
        assert unauthenticated.status_code == 401, (method, path)
        assert unauthenticated.json()["code"] == "unauthorized"
        wrong = server.client.request(method, path, headers=_bearer("dapi_not-a-token"))
        assert wrong.status_code == 401, (method, path)
        for role, token in tokens.items():
            if operation == "revoke_token" and role is Role.ADMIN:
                continue  # below: an admin revoking a token that does not exist is a 404
            reply = server.client.request(method, path, headers=_bearer(token))
            if role < needed:
                assert reply.status_code == 403, (method, path, role, reply.text)
                assert reply.json()["code"] == "forbidden"
                assert f"needs {needed.label}" in reply.json()["error"]
            else:
                assert reply.status_code not in (401, 403), (method, path, role, reply.text)
    gone = server.client.delete(
        f"{ADMIN}/tokens/no-such-token", headers=_bearer(tokens[Role.ADMIN])
    )
    assert gone.status_code == 404 and gone.json()["code"] == "token_not_found"


def test_a_token_revoked_on_one_replica_is_refused_by_another_at_its_next_request(
    manager: ConfigManager, config_file: Path, state_env: dict[str, str], start_server: StartServer
) -> None:
    manager.create_token("keeper", "admin")  # the last token gone would open a loopback API
    with ConfigManager.open(config_file, env=state_env) as other:
        here, there = start_server(manager), start_server(other)
        # Created through one replica's API: the other needs no restart to take it.
        keeper = _bearer(manager.create_token("creator", "admin").token)
        created = here.client.post(
            f"{ADMIN}/tokens", json={"name": "ops", "role": "write"}, headers=keeper
        )
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        token = created.json()["token"]
        assert token.startswith("dapi_") and created.json()["role"] == "write"
        assert there.client.get(f"{ADMIN}/nodes").status_code == 401
        assert there.client.get(f"{ADMIN}/nodes", headers=_bearer(token)).status_code == 200
        # Revoked through the library of the first: the second refuses it at once.
        manager.revoke_token("ops")
        refused = there.client.get(f"{ADMIN}/nodes", headers=_bearer(token))
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"


def test_the_audit_names_the_token_and_the_whoami_route_shows_it(
    manager: ConfigManager, start_server: StartServer
) -> None:
    token = manager.create_token("deployer", "write").token
    server = start_server(manager)
    me = server.client.get(f"{ADMIN}/whoami", headers=_bearer(token))
    assert me.json() == {"name": "deployer", "role": "write", "actor": "api:deployer"}
    put = server.client.put(f"{ADMIN}/state/height", json={"height": 42}, headers=_bearer(token))
    assert put.status_code == 200, put.text
    newest = manager.get_audit(limit=1, newest=True)[0]
    assert (newest.actor, newest.action) == ("api:deployer", "set_height")
    created = [e for e in manager.get_audit(limit=100) if e.action == "token_create"]
    assert created[0].target == "token:deployer" and created[0].new_value == {"role": "write"}
    assert token not in str(created[0])


def test_only_the_digest_is_stored_and_the_list_never_shows_a_token(
    manager: ConfigManager, start_server: StartServer
) -> None:
    created = manager.create_token("grafana", Role.READ)
    rows = raw_rows(manager, "SELECT name, role, token_sha256 FROM api_tokens")
    assert rows == [("grafana", "read", hashlib.sha256(created.token.encode()).hexdigest())]
    server = start_server(manager)
    admin = manager.create_token("root", Role.ADMIN).token
    listed = server.client.get(f"{ADMIN}/tokens", headers=_bearer(admin))
    assert created.token not in listed.text and "token_sha256" not in listed.text
    assert [t["name"] for t in listed.json()] == ["grafana", "root"]
    # A use is recorded (at most once a minute per process): tokens list shows it.
    server.client.get(f"{ADMIN}/nodes", headers=_bearer(created.token))
    grafana = next(t for t in manager.list_tokens() if t.name == "grafana")
    assert grafana.last_used_at is not None
    exported = server.client.get(f"{ADMIN}/export/db", headers=_bearer(admin)).json()
    assert all(row["token_sha256"] == "<redacted>" for row in exported["tables"]["api_tokens"])


def test_bad_token_requests_change_nothing(
    manager: ConfigManager, start_server: StartServer
) -> None:
    server = start_server(manager)
    for body in (
        {"name": "x y", "role": "read"},
        {"name": "ok", "role": "root"},
        {"name": "", "role": "read"},
        {"name": "ok"},
        {"name": "ok", "role": "read", "extra": 1},
        ["ok", "read"],
    ):
        reply = server.client.post(f"{ADMIN}/tokens", json=body)
        assert reply.status_code == 422, (body, reply.text)
    assert manager.list_tokens() == []
    admin = manager.create_token("root", "admin").token
    again = server.client.post(
        f"{ADMIN}/tokens", json={"name": "root", "role": "read"}, headers=_bearer(admin)
    )
    assert again.status_code == 409 and again.json()["code"] == "token_exists"
    with pytest.raises(ValidationError, match="bad token name"):
        manager.create_token("../etc", "read")
    with pytest.raises(ValidationError, match="unknown role"):
        manager.create_token("fine", "superuser")
    with pytest.raises(TokenExistsError):
        manager.create_token("root", "read")
    with pytest.raises(TokenNotFoundError):
        manager.revoke_token("nobody")
    assert [t.name for t in manager.list_tokens()] == ["root"]


def test_a_restore_keeps_the_current_tokens(manager: ConfigManager) -> None:
    old = manager.create_token("old", "read")
    backup = manager.backup()
    manager.revoke_token("old")
    new = manager.create_token("new", "admin")
    manager.restore_backup(backup.path)
    # The revoked token stays revoked; the one created since the backup stays valid.
    assert manager.token_identity(old.token) is None
    assert manager.token_identity(new.token) is not None
    assert [t.name for t in manager.list_tokens()] == ["new"]


@pytest.mark.sqlite_only
def test_the_admin_token_and_its_file_are_an_unnamed_admin(
    tmp_path: Path, start_server: StartServer
) -> None:
    secret = tmp_path / "admin.token"
    secret.write_text("file-token-0123456789\n")
    config = tmp_path / "config.yaml"
    config.write_text("api:\n  admin_token_file: admin.token\n")
    with ConfigManager.open(config) as cm:
        assert cm.admin_token() == "file-token-0123456789"  # relative to the config's directory
        scoped = cm.create_token("reader", "read").token
        server = start_server(cm)
        me = server.client.get(f"{ADMIN}/whoami", headers=_bearer("file-token-0123456789"))
        assert me.json() == {"name": None, "role": "admin", "actor": "api"}
        assert server.client.get(f"{ADMIN}/whoami", headers=_bearer(scoped)).status_code == 200
        assert server.client.get(f"{ADMIN}/whoami").status_code == 401
    for text, problem in (
        ("api:\n  admin_token: abcdefgh\n  admin_token_file: admin.token\n", "both set"),
        ("api:\n  admin_token_file: missing.token\n", "cannot read"),
    ):
        config.write_text(text)
        with ConfigManager.open(config) as cm, pytest.raises(ConfigError, match=problem):
            cm.admin_token()
    secret.write_text("two words\n")
    config.write_text("api:\n  admin_token_file: admin.token\n")
    with ConfigManager.open(config) as cm, pytest.raises(ConfigError, match="one token"):
        cm.admin_token()


@pytest.mark.sqlite_only
def test_a_service_that_requires_a_token_refuses_all_while_none_exists(
    manager: ConfigManager, start_server: StartServer
) -> None:
    """Serving beyond loopback on the strength of scoped tokens: revoking the last one must not
    open the API."""
    token = manager.create_token("only", "admin").token
    server = start_server(manager, require_token=True)
    assert server.client.get(f"{ADMIN}/nodes", headers=_bearer(token)).status_code == 200
    manager.revoke_token("only")
    reply = server.client.get(f"{ADMIN}/nodes")
    assert reply.status_code == 401 and "tokens create" in reply.json()["error"]


@pytest.mark.sqlite_only
def test_repeated_failures_are_slowed_counted_and_logged_once_per_burst(
    manager: ConfigManager, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    manager.create_token("real", "read")
    server = start_server(manager, failure_throttle=FailureThrottle(free=2, max_delay=0.01))
    with caplog.at_level(logging.WARNING, logger="dapi_config.api"):
        for _ in range(6):
            assert server.client.get(f"{ADMIN}/nodes", headers=_bearer("guess")).status_code == 401
    bursts = [r for r in caplog.records if "failures from 127.0.0.1" in r.getMessage()]
    assert len(bursts) == 1
    metrics = server.client.get("/metrics").text
    assert 'dapi_config_auth_failures_total{reason="wrong"} 6.0' in metrics
    assert "dapi_config_auth_slowed_total 4.0" in metrics


def test_the_failure_table_is_bounded_and_its_delays_grow() -> None:
    now = [0.0]
    throttle = FailureThrottle(
        free=2, window=60, max_delay=5, max_clients=100, clock=lambda: now[0]
    )
    delays = [throttle.failed("10.0.0.1") for _ in range(10)]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2:6] == [0.1, 0.2, 0.4, 0.8] and delays[-1] == 5
    now[0] += 61  # quiet for longer than the window: a new burst starts free
    assert throttle.failed("10.0.0.1") == 0.0
    throttle.succeeded("10.0.0.1")
    for i in range(1_000):
        throttle.failed(f"10.1.{i // 256}.{i % 256}")
    assert len(throttle) == 100


@pytest.mark.sqlite_only
def test_the_tokens_commands(config_file: Path) -> None:
    created = run_cli("--config", str(config_file), "tokens", "create", "ci", "--role", "write")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("dapi_") and "shown only now" in created.stderr
    listed = run_cli("--config", str(config_file), "tokens", "list", "--json")
    assert token not in listed.stdout
    assert [(t["name"], t["role"]) for t in httpx.Response(200, text=listed.stdout).json()] == [
        ("ci", "write")
    ]
    for args, message in (
        (("create", "ci"), "already exists|exists"),
        (("create", "bad name"), "bad token name"),
        (("create", "x", "--role", "root"), "unknown role"),
        (("revoke", "nobody"), "no API token named 'nobody'"),
    ):
        result = run_cli("--config", str(config_file), "tokens", *args)
        assert result.returncode == 1, (args, result.stderr)
        assert re.search(message, result.stderr) and "Traceback" not in result.stderr
    revoked = run_cli("--config", str(config_file), "tokens", "revoke", "ci")
    assert revoked.returncode == 0 and "revoked token 'ci' (write)" in revoked.stdout
    empty = run_cli("--config", str(config_file), "tokens", "list", "--json")
    assert empty.stdout.strip() == "[]"


@pytest.mark.sqlite_only
def test_the_predecessors_single_file_keeps_no_tokens(
    config_file: Path, start_server: StartServer
) -> None:
    """``API_STATE_MODE=yaml`` has no database: tokens are refused with the one typed error,
    and the admin token still guards the API."""
    env = {"API_STATE_MODE": "yaml", "DAPI_API__ADMIN_TOKEN": "yaml-mode-admin-token"}
    with ConfigManager.open(config_file, env=env) as cm:
        with pytest.raises(NotSupportedError, match="scoped API tokens"):
            cm.create_token("ops", "admin")
        assert cm.list_tokens() == [] and not cm.has_tokens()
        server = start_server(cm)
        assert server.client.get(f"{ADMIN}/nodes").status_code == 401
        ok = server.client.get(f"{ADMIN}/nodes", headers=_bearer("yaml-mode-admin-token"))
        assert ok.status_code == 200
        created = server.client.post(
            f"{ADMIN}/tokens",
            json={"name": "ops", "role": "read"},
            headers=_bearer("yaml-mode-admin-token"),
        )
        assert created.status_code == 501 and created.json()["code"] == "not_supported"
