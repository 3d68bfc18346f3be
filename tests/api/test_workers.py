"""``serve --workers N``: N processes on one port sharing one state (the performance issue,
round three). Real ``dapi-config serve`` subprocesses; fresh connections are spread over the
workers by the kernel, so each check below makes many and needs every one to agree."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests._postgres import PgServer
from tests.api import conftest
from tests.api.conftest import ServeProcess, free_port
from tests.conftest import TEST_STATE_KEY, run_cli

FRESH_CONNECTIONS = 24  # each a new connection: with 2 workers both answer some of them


def _node(node_id: str) -> dict[str, object]:
    return {
        "id": node_id,
        "host": "10.0.0.1",
        "inference_port": 5000,
        "poc_port": 8080,
        "max_concurrent": 4,
        "models": {},
    }


def _workers_of(server: ServeProcess) -> set[int]:
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    return {int(pid) for pid in children.split()}


def _seen_by_every_worker(server: ServeProcess, node_id: str) -> None:
    """``node_id`` is in the registry as read on three fresh connections (either worker)."""
    for _ in range(3):
        ids = {n["node"]["id"] for n in httpx.get(f"{server.url}/admin/v1/nodes").json()}
        assert node_id in ids


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _metric(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{series} not in the scrape"
    return float(match.group(1))


def test_two_workers_share_the_state_the_metrics_and_the_port(
    config_file: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process(config_file, "--workers", "2")
    workers = _workers_of(server)
    assert len(workers) == 2
    # Each write answered on a fresh connection is seen by the next read on any worker: the
    # hot caches of one worker never hide another's commit.
    for index in range(8):
        assert (
            httpx.post(f"{server.url}/admin/v1/nodes", json=_node(f"n{index}")).status_code == 200
        )
        _seen_by_every_worker(server, f"n{index}")
        height = httpx.put(f"{server.url}/admin/v1/state/height", json={"height": 100 + index})
        assert height.status_code == 200
        for _ in range(3):
            got = httpx.get(f"{server.url}/admin/v1/state/height").json()["height"]
            assert got == 100 + index
    # Every scrape (whichever worker answers it) counts the requests of both workers.
    for _ in range(FRESH_CONNECTIONS):
        assert httpx.get(f"{server.url}/livez").status_code == 200
    scrapes = [httpx.get(f"{server.url}/metrics").text for _ in range(4)]
    for text in scrapes:
        assert (
            _metric(
                text, 'dapi_config_http_requests_total{method="GET",route="/livez",status="200"}'
            )
            >= FRESH_CONNECTIONS
        )
        assert (
            _metric(
                text,
                'dapi_config_http_requests_total{method="POST",route="/admin/v1/nodes",status="200"}',
            )
            == 8
        )
        assert _metric(text, 'dapi_config_state_writes_total{outcome="committed"}') == 16
        assert _metric(text, "dapi_config_nodes") == 8
    assert server.terminate() == 0
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))
    assert "Traceback" not in server.log()


def test_the_primary_alone_runs_the_backups_and_the_export(
    config_file: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process(
        config_file,
        "--workers",
        "2",
        env={"API_BACKUP_INTERVAL": "0.3s", "CONFIG_EXPORT_INTERVAL": "0.3s"},
    )
    _wait_for(
        lambda: server.log().count("backup of ") >= 3 and server.log().count("export written") >= 3
    )
    assert server.terminate() == 0
    lines = server.log().splitlines()
    backups = [line for line in lines if "backup of " in line]
    exports = [line for line in lines if "full-config export written" in line]
    assert backups and all("worker 0: " in line for line in backups), backups
    assert exports and all("worker 0: " in line for line in exports), exports
    assert any("worker 1: " in line for line in lines)  # the other worker logs as itself


def test_a_killed_worker_is_replaced_and_no_acknowledged_write_is_lost(
    config_file: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process(config_file, "--workers", "2")
    acknowledged: list[str] = []
    stop = threading.Event()

    def write() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            try:
                # A fresh connection per write: the survivor takes them while one is down.
                reply = httpx.post(
                    f"{server.url}/admin/v1/nodes", json=_node(f"k{index}"), timeout=10
                )
            except httpx.HTTPError:
                continue  # in flight in the killed worker: never acknowledged
            if reply.status_code == 200:
                acknowledged.append(f"k{index}")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        before = _workers_of(server)
        _wait_for(lambda: len(acknowledged) >= 20)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(_workers_of(server) - before) == 1)
        after = len(acknowledged)
        _wait_for(lambda: len(acknowledged) >= after + 20)
    finally:
        stop.set()
        writer.join(30)
    workers = _workers_of(server)
    assert len(workers) == 2 and victim not in workers
    assert f"(pid {victim}) was killed by SIGKILL; starting it again" in server.log()
    stored = {n["node"]["id"] for n in httpx.get(f"{server.url}/admin/v1/nodes").json()}
    assert set(acknowledged) <= stored
    assert server.terminate() == 0


def test_an_audit_watch_wakes_on_a_commit_of_any_worker(
    config_file: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process(config_file, "--workers", "2")
    revision = httpx.get(f"{server.url}/admin/v1/audit?newest=true&limit=1").json()
    since = revision["entries"][-1]["revision"] if revision["entries"] else 0
    results: list[httpx.Response] = []
    watchers = [
        threading.Thread(
            target=lambda: results.append(
                httpx.get(f"{server.url}/admin/v1/audit?since={since}&wait=20", timeout=30)
            )
        )
        for _ in range(6)  # on fresh connections: both workers hold some
    ]
    for watcher in watchers:
        watcher.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert httpx.put(f"{server.url}/admin/v1/state/height", json={"height": 7}).status_code == 200
    for watcher in watchers:
        watcher.join(30)
    assert time.monotonic() - started < 10  # woken by the commit, not by the 20 s timeout
    assert len(results) == 6
    for reply in results:
        assert reply.status_code == 200
        assert [e["action"] for e in reply.json()["entries"]] == ["set_height"]
    assert server.terminate() == 0


def test_workers_refuse_a_state_with_one_writer_and_bad_counts(
    config_file: Path, tmp_path: Path
) -> None:
    res = run_cli("--config", str(config_file), "serve", "--workers", "0")
    assert res.returncode == 2 and "--workers" in res.stderr
    res = run_cli("--config", str(config_file), "serve", "--workers", "65", "--port", "1")
    assert res.returncode == 1 and "--workers must be between 1 and 64" in res.stderr
    res = run_cli(
        "--config", str(config_file), "serve", "--workers", "2", env={"API_STATE_MODE": "dual"}
    )
    assert res.returncode == 1 and "needs API_STATE_MODE=db" in res.stderr, res.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stop_signal_stops_every_worker_gracefully(
    config_file: Path, serve_process: Callable[..., ServeProcess], workers: str
) -> None:
    server = serve_process(config_file, "--workers", workers)
    children = _workers_of(server)
    assert len(children) == (2 if workers == "2" else 0)
    assert server.terminate(signal.SIGINT) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    assert "stopped by signal 2" in server.log()


def test_workers_on_a_postgresql_state(
    pg_server: PgServer, config_file: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    env = {"API_STATE_URL": pg_server.fresh_database(), "API_STATE_KEY": TEST_STATE_KEY}
    server = serve_process(config_file, "--workers", "2", env=env)
    assert len(_workers_of(server)) == 2
    for index in range(6):
        assert (
            httpx.post(f"{server.url}/admin/v1/nodes", json=_node(f"p{index}")).status_code == 200
        )
        _seen_by_every_worker(server, f"p{index}")
    scrape = httpx.get(f"{server.url}/metrics").text
    assert _metric(scrape, "dapi_config_nodes") == 6
    assert server.terminate() == 0


def test_a_worker_that_dies_at_every_start_stops_the_service(config_file: Path) -> None:
    """No restart loop: a worker that keeps dying within seconds of its start (here a fail
    point kills it each time) stops the service with an error naming it."""
    res = run_cli(
        "--config",
        str(config_file),
        "serve",
        "--workers",
        "2",
        "--port",
        str(free_port()),
        env={"DAPI_CONFIG_FAILPOINT": "serve.worker_start"},
        timeout=60,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    assert re.search(
        r"error: worker [01] was killed by SIGKILL 3 times within 5 s of its start: stopping "
        "the service",
        res.stderr,
    ), res.stderr[-2000:]
    assert "starting it again" in res.stderr  # it was restarted before it gave up


def test_the_fixture_picks_another_port_when_its_first_was_taken(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests start many ``serve`` processes at once: a free port can be taken before one
    binds it (seen in CI). The fixture then tries another, and leaks no pipe."""

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        ports = iter([taken.getsockname()[1], free_port()])
        monkeypatch.setattr(conftest, "free_port", lambda: next(ports))
        server = conftest.start_serve_process(config_file)
        try:
            assert httpx.get(f"{server.url}/livez").status_code == 200
            assert not server.url.endswith(f":{taken.getsockname()[1]}")
        finally:
            server.stop()
