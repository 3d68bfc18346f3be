"""Every dynamic value over HTTP (SPEC §15), against the real server on both backends: each
kind of the catalogue read with its ETag and replaced (If-Match: 412 and nothing written),
strict bodies, the schedule as a collection, seed rotation, the worker key, and PATCH /state
applied whole or not at all."""

from __future__ import annotations

import json

import pytest

from dapi_config.catalogue import KINDS
from tests.api.conftest import RunningServer
from tests.test_catalogue import NEW

pytestmark = pytest.mark.both_backends

STATE = "/admin/v1/state"
MERGE = {"Content-Type": "application/merge-patch+json"}


def test_each_kind_is_read_and_replaced(running_server: RunningServer) -> None:
    c = running_server.client
    for kind in [k for k in KINDS if not k.collection]:
        url = f"{STATE}/{kind.path}"
        first = c.get(url)
        assert first.status_code == 200 and first.headers["etag"], kind.name
        stored = c.put(url, json=NEW[kind.name], headers={"If-Match": first.headers["etag"]})
        assert stored.status_code == 200, stored.text
        assert c.get(url).json() == stored.json()
        assert stored.headers["etag"] == c.get(url).headers["etag"] != first.headers["etag"]
        # Stale: 412 and nothing written.
        revision = running_server.manager.latest_revision()
        stale = c.put(url, json=NEW[kind.name], headers={"If-Match": first.headers["etag"]})
        assert stale.status_code == 412 and stale.json()["code"] == "precondition_failed"
        assert running_server.manager.latest_revision() == revision
        (entry,) = running_server.manager.get_audit(revision - 1, 1)
        assert entry.actor == "api", kind.name


BAD_BODIES = [
    ("height", {"height": "12"}, "height"),  # no coercion
    ("height", {"height": 2**53}, "height"),  # beyond what JSON numbers carry exactly
    ("upgrade-plan", {"name": "v\u0000"}, "name"),  # control characters: never
    ("height", {"height": 12, "current_node_version": "v9"}, "current_node_version"),
    ("seeds/current", {"seed": 1, "signatur": "x"}, "signatur"),  # a typo is refused
    ("params/validation", {"timestamp_expiration": 1.5}, "timestamp_expiration"),
    ("upgrade-plan", [], ""),
]


def test_bad_bodies_are_refused_and_change_nothing(running_server: RunningServer) -> None:
    revision = running_server.manager.latest_revision()
    for path, body, field in BAD_BODIES:
        r = running_server.client.put(f"{STATE}/{path}", json=body)
        assert r.status_code == 422, r.text
        assert field in {e["field"] for e in r.json()["errors"]} or not field
        bad = running_server.client.put(
            f"{STATE}/{path}", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_json"
    assert running_server.manager.latest_revision() == revision


def test_the_schedule_is_a_collection(running_server: RunningServer) -> None:
    c = running_server.client
    entry = {"height": 900, "version": "v2"}
    assert c.post(f"{STATE}/node-versions", json=entry).status_code == 201
    again = c.post(f"{STATE}/node-versions", json=entry)
    assert again.status_code == 200 and again.json() == [entry]
    assert c.get(f"{STATE}/node-versions").json() == [entry]
    assert c.put(f"{STATE}/node-versions", json=[entry]).status_code == 405
    assert c.delete(f"{STATE}/node-versions/900/v2").json() == []
    missing = c.delete(f"{STATE}/node-versions/900/v2")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    # Setting the height applies the schedule, as set_height does.
    c.post(f"{STATE}/node-versions", json=entry)
    assert c.put(f"{STATE}/height", json={"height": 900}).json() == {
        "height": 900,
        "current_node_version": "v2",
    }


def test_rotation_plan_deletion_and_the_worker_key(running_server: RunningServer) -> None:
    c = running_server.client
    c.put(f"{STATE}/seeds/upcoming", json=NEW["seeds.upcoming"])
    rotated = c.post(f"{STATE}/seeds/rotate").json()
    assert rotated["current"]["seed"] == NEW["seeds.upcoming"]["seed"]
    assert rotated["upcoming"]["seed"] == 0
    c.put(f"{STATE}/upgrade-plan", json=NEW["upgrade-plan"])
    etag = c.get(f"{STATE}/upgrade-plan").headers["etag"]
    assert c.delete(f"{STATE}/upgrade-plan", headers={"If-Match": '"other"'}).status_code == 412
    assert c.delete(f"{STATE}/upgrade-plan", headers={"If-Match": etag}).json()["name"] == ""
    key = c.post(f"{STATE}/worker-key")
    assert key.status_code == 201 and list(key.json()) == ["worker_public"]
    private = running_server.manager.get_ml_node_key_config().worker_private
    assert private and private not in key.text


def test_patch_applies_whole_or_not_at_all(running_server: RunningServer) -> None:
    c = running_server.client
    state = c.get(STATE)
    etag = state.headers["etag"]
    bad = {"height": 10, "upgrade_plan": {"name": "v3"}, "seeds": {"upcoming": {"seed": "x"}}}
    r = c.patch(STATE, content=json.dumps(bad), headers={**MERGE, "If-Match": etag})
    assert r.status_code == 422 and "seeds.upcoming.seed" in r.json()["error"]
    assert c.get(STATE).json() == state.json()
    assert c.patch(STATE, json={"height": 10}).status_code == 415  # not a merge patch
    good = {"height": 10, "upgrade_plan": {"name": "v3"}, "params": None}
    assert c.patch(STATE, content=json.dumps(good), headers=MERGE).status_code == 422
    good.pop("params")
    done = c.patch(STATE, content=json.dumps(good), headers={**MERGE, "If-Match": etag})
    assert done.status_code == 200, done.text
    assert done.json()["height"] == 10 and done.json()["upgrade_plan"]["name"] == "v3"
    assert done.headers["etag"] == c.get(STATE).headers["etag"]
    stale = c.patch(STATE, content=json.dumps({"height": 11}), headers={**MERGE, "If-Match": etag})
    assert stale.status_code == 412 and c.get(STATE).json()["height"] == 10


def test_every_operation_id_reads_well(running_server: RunningServer) -> None:
    document = running_server.client.get("/openapi.json").json()
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert not [i for i in ids if "admin_v1" in i or i.endswith(("_get", "_post", "_put"))]
    for kind in KINDS:
        assert f"get_{kind.operation}" in ids
