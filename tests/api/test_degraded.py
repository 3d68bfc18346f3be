"""The service when its state file is removed or replaced: up, not ready, every read and write
503 -- and back to normal without a restart once the file returns (RELIABILITY.md, "State file
removed or replaced")."""

from __future__ import annotations

import os

from tests.api.conftest import RunningServer

NODE = {"id": "n1", "host": "10.0.0.1", "inference_port": 5000, "poc_port": 8080}


def test_service_degrades_and_recovers(running_server: RunningServer) -> None:
    client = running_server.client
    manager = running_server.manager
    manager.set_height(42)
    assert client.post("/admin/v1/nodes", json=NODE).status_code in (200, 201)
    state = manager.state_path
    aside = state.with_name("aside.db")
    os.replace(state, aside)
    try:
        assert client.get("/livez").status_code == 200  # the process stays up
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
        write = client.post("/admin/v1/nodes", json={**NODE, "id": "n2"})
        assert write.status_code == 503, write.text
        assert write.json()["code"] == "state_unavailable"
        assert "Retry-After" in write.headers
        for _ in range(8):  # on whichever pool thread serves it: always the same answer
            reads = client.get("/admin/v1/nodes")
            assert reads.status_code == 503 and "removed" in reads.json()["error"]
        assert client.get("/admin/v1/state").status_code == 503
    finally:
        os.replace(aside, state)
    assert client.get("/readyz").status_code == 200
    assert client.post("/admin/v1/nodes", json={**NODE, "id": "n3"}).status_code in (200, 201)
    assert [n.id for n in manager.get_nodes()] == ["n1", "n3"]
