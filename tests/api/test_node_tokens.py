"""A ``base_url`` node's ``auth_token`` over the admin API: accepted, sealed at rest, never
shown (``<redacted>``), kept by a read-modify-write that sends ``<redacted>`` back; and unknown
fields in a node body are refused (a typo is never stored)."""

from __future__ import annotations

import pytest

from dapi_config.models import REDACTED, InferenceNodeConfig
from tests.api.conftest import RunningServer
from tests.conftest import raw_rows

pytestmark = pytest.mark.both_backends

NODES = "/admin/v1/nodes"
TOKEN = "bearer-7c1d2e3f4a5b"


def cloud_node(**extra: object) -> dict[str, object]:
    return {
        "id": "cloud-1",
        "base_url": "https://svc.provider.example/v1",
        "auth_token": TOKEN,
        "max_concurrent": 8,
        "models": {"Qwen/Qwen3-32B": {"args": []}},
        **extra,
    }


def test_token_is_sealed_and_never_shown(running_server: RunningServer) -> None:
    c = running_server.client
    r = c.post(NODES, json=cloud_node())
    assert r.status_code == 200, r.text
    assert r.json()["auth_token"] == REDACTED
    assert (r.json()["host"], r.json()["inference_port"]) == ("", 0)
    for body in (c.get(NODES).text, c.get(f"{NODES}/cloud-1").text, c.get("/admin/v1/config").text):
        assert TOKEN not in body
    tables = c.get("/admin/v1/export/db").json()["tables"]
    (row,) = tables["inference_nodes"]
    assert row["auth_token"] == REDACTED and row["base_url"] == "https://svc.provider.example/v1"
    # The library (a dapi port using this service's state) gets the token itself.
    stored = running_server.manager.get_node("cloud-1").auth_token
    assert stored is not None and stored.get_secret_value() == TOKEN
    manager = running_server.manager
    if manager.backend.file_backed:
        assert TOKEN.encode() not in manager.state_path.read_bytes()
    ((sealed,),) = raw_rows(manager, "SELECT auth_token FROM inference_nodes")
    assert isinstance(sealed, str) and sealed.startswith("v1.") and TOKEN not in sealed


def test_redacted_token_sent_back_keeps_the_stored_one(running_server: RunningServer) -> None:
    c = running_server.client
    assert c.post(NODES, json=cloud_node()).status_code == 200
    node = c.get(f"{NODES}/cloud-1").json()
    node["max_concurrent"] = 16
    r = c.put(f"{NODES}/cloud-1", json=node)  # auth_token is "<redacted>" here
    assert r.status_code == 200, r.text
    stored = running_server.manager.get_node("cloud-1")
    assert stored.max_concurrent == 16
    assert stored.auth_token is not None and stored.auth_token.get_secret_value() == TOKEN
    # A new node cannot "keep" a token it never had.
    r = c.post(NODES, json=cloud_node(id="cloud-2", auth_token=REDACTED))
    assert r.status_code == 422
    assert "auth_token" in r.text
    assert [n["node"]["id"] for n in c.get(NODES).json()] == ["cloud-1"]


def test_unknown_field_in_a_node_body_is_refused(running_server: RunningServer) -> None:
    c = running_server.client
    r = c.post(NODES, json=cloud_node(is_enabeld=False))
    assert r.status_code == 422
    assert "is_enabeld" in r.text
    assert c.get(NODES).json() == []


def test_node_without_address_names_the_missing_fields(running_server: RunningServer) -> None:
    c = running_server.client
    r = c.post(NODES, json={"id": "n1", "max_concurrent": 1})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"host", "inference_port", "poc_port"}
    assert "base_url" in r.text


class _CountingSealer:
    """Wraps the store's sealer: counts the calls a write makes into it from the store."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seals = 0

    def seal(self, plaintext: str, context: str) -> str:
        self.seals += 1
        return self.inner.seal(plaintext, context)  # type: ignore[attr-defined,no-any-return]

    def open(self, token: str, context: str) -> str:
        return self.inner.open(token, context)  # type: ignore[attr-defined,no-any-return]


def test_a_node_write_reads_its_row_once_and_seals_before_the_store(
    running_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write path of POST/PUT /admin/v1/nodes: the body is validated once (at the edge),
    the stored row is read once (its ETag, its admin state, a redacted token all come from
    that read), and a token is sealed by the manager before the store sees it: the store
    never calls back up to seal."""
    manager = running_server.manager
    store = manager.backend
    sealer = _CountingSealer(manager._secrets.sealer())
    store.use_sealer(sealer)
    reads: list[str] = []
    real_node = store.node

    def counting_node(node_id: str) -> object:
        reads.append(node_id)
        return real_node(node_id)

    monkeypatch.setattr(store, "node", counting_node)
    validations = 0
    model_validate = InferenceNodeConfig.model_validate.__func__  # type: ignore[attr-defined]

    def counting_validate(cls: type, *args: object, **kwargs: object) -> object:
        nonlocal validations
        validations += cls is InferenceNodeConfig  # the edge validates a NodeInput
        return model_validate(cls, *args, **kwargs)

    monkeypatch.setattr(InferenceNodeConfig, "model_validate", classmethod(counting_validate))
    c = running_server.client
    assert c.post(NODES, json=cloud_node()).status_code == 200  # created
    assert reads == ["cloud-1"]
    reads.clear()
    assert c.post(NODES, json=cloud_node(max_concurrent=16)).status_code == 200  # replaced
    assert reads == ["cloud-1"]
    reads.clear()
    etag = c.get(f"{NODES}/cloud-1").headers["etag"]
    reads.clear()
    body = {**cloud_node(max_concurrent=32), "auth_token": REDACTED}
    assert c.put(f"{NODES}/cloud-1", json=body, headers={"If-Match": etag}).status_code == 200
    assert reads == ["cloud-1"]  # ETag, redacted token and admin state from one read
    assert c.post(f"{NODES}/batch", json=[cloud_node(id="cloud-2")]).status_code == 201
    manager.set_nodes([manager.get_node("cloud-1"), manager.get_node("cloud-2")])
    assert sealer.seals == 0  # sealed before the store, every time
    assert validations == 0  # the edge's strict validation was the only one
    token = manager.get_node("cloud-2").auth_token
    assert token is not None and token.get_secret_value() == TOKEN
