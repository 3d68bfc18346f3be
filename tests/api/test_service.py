"""``dapi-config serve`` as a real process: port, logs, concurrent clients, restarts, signals."""

from __future__ import annotations

import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ServeProcess, free_port
from tests.api.test_nodes import NODES

Serve = Callable[..., ServeProcess]
THREADS = 16
OPS_PER_THREAD = 24


def small_node(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "host": "10.1.2.3", "inference_port": 5000, "poc_port": 8080}


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_port_from_config_and_one_log_line_per_request(
    config_file: Path, serve_process: Serve
) -> None:
    port = free_port()
    text = config_file.read_text().replace("admin_server_port: 9200", f"admin_server_port: {port}")
    config_file.write_text(text)
    proc = serve_process(config_file, port=port, pass_port=False)
    r = httpx.post(f"{proc.url}{NODES}", json=small_node("n1"))
    assert r.status_code == 200
    httpx.get(f"{proc.url}{NODES}/ghost")
    httpx.get(f"{proc.url}/x%0A2026-01-01 INFO forged%00")  # a log-forging path
    assert proc.terminate() == 0
    log = proc.log()
    assert '"GET /x\\n2026-01-01 INFO forged\\x00" 404' in log
    assert "\n2026-01-01 INFO forged" not in log
    assert f"serving the admin API on http://127.0.0.1:{port}" in log
    assert '"POST /admin/v1/nodes" 200' in log
    assert '"GET /admin/v1/nodes/ghost" 404' in log
    assert "state change r1 by api: add_node n1" in log
    assert "stopped by signal 15" in log
    assert proc.proc.stdout is not None
    assert proc.proc.stdout.read() == ""  # stdout carries results only; serve has none
    # The periodic exporter ran at start-up.
    assert (config_file.parent / "api-config-full.yaml").stat().st_mode & 0o777 == 0o600


def test_bad_export_interval_stops_startup(config_file: Path) -> None:
    from tests.conftest import run_cli

    result = run_cli("--config", str(config_file), "serve", env={"CONFIG_EXPORT_INTERVAL": "often"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: CONFIG_EXPORT_INTERVAL: expected seconds (600) or a duration such as 30s, "
        "10m or 1h, got 'often'"
    )


def test_concurrent_clients_then_restart_keep_exactly_the_acknowledged(
    config_file: Path, serve_process: Serve
) -> None:
    proc = serve_process(config_file)
    acknowledged_adds: list[str] = []
    acknowledged_removes: list[str] = []
    shared_winners: list[str] = []
    lock = threading.Lock()
    failures: list[str] = []

    def worker(t: int) -> None:
        mine: list[str] = []
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            for k in range(OPS_PER_THREAD):
                if k % 4 == 3 and mine:
                    victim = mine.pop(0)
                    r = client.delete(f"{NODES}/{victim}")
                    if r.status_code == 200:
                        with lock:
                            acknowledged_removes.append(victim)
                    else:
                        failures.append(f"delete {victim}: {r.status_code} {r.text}")
                    continue
                if k % 6 == 0:
                    # Every thread races to create the same id (the batch route adds, POST
                    # /nodes would replace): exactly one may win.
                    shared = f"shared-{k}"
                    r = client.post(f"{NODES}/batch", json=[small_node(shared)])
                    if r.status_code == 201:
                        with lock:
                            shared_winners.append(shared)
                            acknowledged_adds.append(shared)
                    elif r.status_code != 409:
                        failures.append(f"add {shared}: {r.status_code} {r.text}")
                    continue
                node_id = f"t{t}-{k}"
                r = client.post(NODES, json=small_node(node_id))
                if r.status_code == 200:
                    mine.append(node_id)
                    with lock:
                        acknowledged_adds.append(node_id)
                else:
                    failures.append(f"add {node_id}: {r.status_code} {r.text}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(shared_winners) == sorted({f"shared-{k}" for k in range(0, OPS_PER_THREAD, 6)})
    expected = set(acknowledged_adds) - set(acknowledged_removes)

    # Kill without warning: acknowledged writes must already be durable.
    proc.terminate(signal.SIGKILL)
    state = config_file.parent / "state.db"
    assert integrity(state) == "ok"
    again = serve_process(config_file)
    listed = httpx.get(f"{again.url}{NODES}").json()
    assert len(listed) == len(expected)
    assert {n["node"]["id"] for n in listed} == expected
    state_body = httpx.get(f"{again.url}/admin/v1/state").json()
    # One audit row per acknowledged change, nothing else.
    assert state_body["revision"] == len(acknowledged_adds) + len(acknowledged_removes)
    assert again.terminate() == 0


def test_sigterm_during_load_exits_cleanly(config_file: Path, serve_process: Serve) -> None:
    proc = serve_process(config_file)
    acknowledged: list[str] = []
    lock = threading.Lock()
    started = threading.Event()
    unexpected: list[str] = []

    def writer(t: int) -> None:
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            for k in range(10_000):
                node_id = f"w{t}-{k}"
                try:
                    r = client.post(NODES, json=small_node(node_id))
                except httpx.TransportError:
                    return  # the server went away: expected after SIGTERM
                if r.status_code == 200:
                    with lock:
                        acknowledged.append(node_id)
                    if len(acknowledged) >= 40:
                        started.set()
                elif r.status_code != 503:
                    unexpected.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    assert started.wait(60)
    code = proc.terminate(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    assert code == 0, proc.log()
    assert unexpected == []
    state = config_file.parent / "state.db"
    assert integrity(state) == "ok"
    log = proc.log()
    assert "Traceback" not in log
    conn = sqlite3.connect(state)
    try:
        stored = {row[0] for row in conn.execute("SELECT id FROM inference_nodes")}
    finally:
        conn.close()
    # Graceful shutdown: every request the server took was answered, so the store holds
    # exactly the acknowledged writes (a request refused at shutdown never reached it).
    assert stored == set(acknowledged)


def test_sigint_is_a_clean_stop_too(config_file: Path, serve_process: Serve) -> None:
    proc = serve_process(config_file)
    assert httpx.post(f"{proc.url}{NODES}", json=small_node("n1")).status_code == 200
    assert proc.terminate(signal.SIGINT) == 0
    assert "stopped by signal 2" in proc.log()
    assert integrity(config_file.parent / "state.db") == "ok"


def test_busy_port_is_one_error_line_exit_1(config_file: Path) -> None:
    from tests.conftest import run_cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--config", str(config_file), "serve", "--port", str(port))
    assert result.returncode == 1
    assert result.stdout == ""
    errors = [
        line for line in result.stderr.splitlines() if " ERROR " in line or line.startswith("error")
    ]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "Traceback" not in result.stderr


def test_readme_walkthrough_on_the_example_config(tmp_path: Path, serve_process: Serve) -> None:
    # `make serve` runs `dapi-config --config examples/config.yaml serve`; the README's curl
    # walkthrough must work against exactly that config (a copy, so the repo stays clean).
    example = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
    config = tmp_path / "config.yaml"
    config.write_bytes(example.read_bytes())
    config.chmod(0o600)
    proc = serve_process(config)
    base = proc.url
    assert httpx.get(f"{base}/readyz").status_code == 200
    added = httpx.post(
        f"{base}/admin/v1/nodes",
        json={
            "id": "node1",
            "host": "10.0.0.5",
            "inference_port": 5000,
            "poc_port": 8080,
            "models": {"Qwen/Qwen2.5-7B-Instruct": {"args": ["--tp", "2"]}},
        },
    )
    assert added.status_code == 200
    assert [n["node"]["id"] for n in httpx.get(f"{base}/admin/v1/nodes").json()] == ["node1"]
    assert httpx.get(f"{base}/admin/v1/nodes/node1").headers["etag"]
    assert httpx.post(f"{base}/admin/v1/nodes/node1/disable").json()["node_id"] == "node1"
    assert httpx.get(f"{base}/admin/v1/state").json()["node_count"] == 1
    assert "dapi_config_http_requests_total" in httpx.get(f"{base}/metrics").text
    # The exporter runs at start-up (in its own thread) and tells the metrics when it is done.
    deadline = time.monotonic() + 30
    while _gauge(httpx.get(f"{base}/metrics").text, "last_export") == 0:
        assert time.monotonic() < deadline, "no export within 30 s"
        time.sleep(0.05)
    assert proc.terminate() == 0


def _kill_under_load(
    config: Path,
    serve: Serve,
    *,
    threads: int,
    min_acks: int,
    last_op: dict[str, tuple[bool, bool]],
    round_no: int = 0,
) -> None:
    """Writers add and remove nodes until the server is SIGKILLed; after a restart, every
    acknowledged change is there. Only a request cut off by the kill (at most one per thread)
    may have gone either way."""
    proc = serve(config)
    # ``last_op``: id -> (present after the op?, acknowledged?) for the last op on that id,
    # carried across rounds (an op cut off by a kill is settled by the next restart's read).
    lock = threading.Lock()
    acks = threading.Semaphore(0)

    def writer(t: int) -> None:
        mine: list[str] = []
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            for k in range(100_000):
                remove = k % 3 == 2 and bool(mine)
                node_id = mine.pop(0) if remove else f"r{round_no}-{t}-{k}"
                with lock:
                    last_op[node_id] = (not remove, False)
                try:
                    r = (
                        client.delete(f"{NODES}/{node_id}")
                        if remove
                        else client.post(NODES, json=small_node(node_id))
                    )
                except httpx.TransportError:
                    return  # killed: this op's outcome is unknown
                assert r.status_code == 200, r.text
                with lock:
                    last_op[node_id] = (not remove, True)
                if not remove:
                    mine.append(node_id)
                acks.release()

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for _ in range(min_acks):
        assert acks.acquire(timeout=60)
    proc.terminate(signal.SIGKILL)
    for worker in workers:
        worker.join(60)

    state = config.parent / "state.db"
    assert integrity(state) == "ok"
    again = serve(config)
    stored = {n["node"]["id"] for n in httpx.get(f"{again.url}{NODES}").json()}
    unknown = [i for i, (_, acked) in last_op.items() if not acked]
    assert len(unknown) <= threads
    for node_id, (present, acked) in last_op.items():
        if acked:
            assert (node_id in stored) == present, node_id
    assert stored <= set(last_op)  # nothing that was never sent
    for node_id in unknown:  # now known: whatever the restart reads
        last_op[node_id] = (node_id in stored, True)
    assert again.terminate() == 0


def test_sigkill_under_load_keeps_every_acknowledged_change(
    config_file: Path, serve_process: Serve
) -> None:
    _kill_under_load(config_file, serve_process, threads=8, min_acks=60, last_op={})


@pytest.mark.stress
def test_sigkill_under_load_campaign(config_file: Path, serve_process: Serve) -> None:
    last_op: dict[str, tuple[bool, bool]] = {}
    for round_no in range(10):
        _kill_under_load(
            config_file, serve_process, threads=16, min_acks=300, last_op=last_op, round_no=round_no
        )


def _gauge(metrics: str, name: str) -> float:
    prefix = f"dapi_config_{name}_timestamp_seconds "
    return float(next(line for line in metrics.splitlines() if line.startswith(prefix)).split()[1])
