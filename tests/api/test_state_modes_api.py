"""`dapi-config serve` in the transition modes: the admin API writes land in the legacy-layout
file (yaml) or its mirror (dual), and the service reports ready."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ServeProcess
from tests.legacy.test_migrate import GO_WRITER, plain_load, write

NODE = {"id": "api-node", "host": "10.1.1.1", "inference_port": 5000, "poc_port": 8080}


@pytest.mark.parametrize("mode", ["yaml", "dual"])
def test_serve_in_transition_mode(
    tmp_path: Path, serve_process: Callable[..., ServeProcess], mode: str
) -> None:
    config = write(tmp_path, GO_WRITER, mode=0o600)
    legacy_file = config if mode == "yaml" else tmp_path / "state.db.legacy.yaml"
    service = serve_process(config, env={"API_STATE_MODE": mode, "CONFIG_EXPORT_INTERVAL": "0"})
    with httpx.Client(base_url=service.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/admin/v1/nodes", json=NODE).status_code in (200, 201)
        assert "api-node" in [n["id"] for n in plain_load(legacy_file)["nodes"]]
        assert client.delete("/admin/v1/nodes/node2").status_code == 200
        assert [n["id"] for n in plain_load(legacy_file)["nodes"]] == ["node1", "3", "api-node"]
        assert client.post("/admin/v1/nodes/batch", json=[NODE]).status_code == 409
        assert client.get("/readyz").status_code == 200  # still ready after file rewrites
        state = client.get("/admin/v1/state").json()
        assert state["height"] == 183467
    assert service.terminate(signal.SIGTERM) == 0
    assert (tmp_path / "state.db").exists() == (mode == "dual")
