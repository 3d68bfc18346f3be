"""Ordinary operation, all at once, on SQLite and on PostgreSQL: ``serve`` probed every 100 ms,
API writers, CLI writers beside it, a watcher following the trail, a backup, a restore and a
check, for a bounded time. Nothing acknowledged is lost (or, when a restore undid it, the trail
says so), revisions only grow, and every reader ends on the same state.

Reproduces the reliability findings together: the probe that dropped the service's locks (the
CLI then deleted its live WAL), the restore the service later undid, revisions that ran
backwards after a restore and the watcher that never woke.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from dapi_config import ConfigManager
from dapi_config.store.backend import AuditEntry
from tests.api.conftest import ServeProcess, start_serve_process
from tests.conftest import run_cli

pytestmark = [pytest.mark.both_backends, pytest.mark.slow]

#: Seconds of mixed load in CI (``make stress``: DAPI_CONFIG_CAMPAIGN_SECONDS, default 120).
CI_SECONDS = 12.0
SECONDS = float(os.environ.get("DAPI_CONFIG_CAMPAIGN_SECONDS", CI_SECONDS))
PROBE_EVERY_S = 0.1
NODE = {"host": "10.0.0.5", "inference_port": 5000, "poc_port": 8080, "models": {}}


@dataclass
class Log:
    acknowledged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    probes: dict[int, int] = field(default_factory=dict)
    watched: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: list[str], item: str) -> None:
        with self.lock:
            what.append(item)


def _api_writer(url: str, stop: threading.Event, log: Log) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        i = 0
        while not stop.is_set():
            node_id = f"api-{i}"
            reply = client.post("/admin/v1/nodes", json={"id": node_id, **NODE})
            log.add(log.acknowledged if reply.status_code == 200 else log.refused, node_id)
            i += 1


def _cli_writer(config: Path, env: dict[str, str], stop: threading.Event, log: Log) -> None:
    i = 0
    while not stop.is_set():
        node_id = f"cli-{i}"
        body = json.dumps({"id": node_id, **NODE})
        result = run_cli("--config", str(config), "nodes", "add", "-", env=env, input=body)
        log.add(log.acknowledged if result.returncode == 0 else log.refused, node_id)
        i += 1


def _prober(url: str, stop: threading.Event, log: Log) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.wait(PROBE_EVERY_S):
            status = client.get("/readyz").status_code
            with log.lock:
                log.probes[status] = log.probes.get(status, 0) + 1


def _watcher(url: str, stop: threading.Event, log: Log) -> None:
    since = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            page = client.get("/admin/v1/audit", params={"since": since, "wait": 1}).json()
            for entry in page["entries"]:
                log.watched.append(entry["revision"])
            since = page["next_since"]


@pytest.fixture(params=["1", "2"], ids=["1-worker", "2-workers"])
def serve(
    config_file: Path, state_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[ServeProcess]:
    """``serve`` with one worker, and with two (writes, probes and the watcher then reach
    either; the CLI writes and restores beside both)."""
    process = start_serve_process(config_file, "--workers", request.param, env=state_env)
    try:
        yield process
    finally:
        process.stop()


def test_probes_writers_backup_restore_and_check_together(
    config_file: Path, state_env: dict[str, str], serve: ServeProcess
) -> None:
    seed = int(os.environ.get("DAPI_CONFIG_CAMPAIGN_SEED", random.randrange(1 << 16)))
    print(f"operation campaign: {SECONDS:g} s, seed {seed}")  # replay with both variables
    rng = random.Random(seed)
    server = serve
    stop = threading.Event()
    log = Log()
    threads = [
        threading.Thread(target=_prober, args=(server.url, stop, log)),
        threading.Thread(target=_watcher, args=(server.url, stop, log)),
        threading.Thread(target=_api_writer, args=(server.url, stop, log)),
        threading.Thread(target=_cli_writer, args=(config_file, state_env, stop, log)),
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(SECONDS * rng.uniform(0.2, 0.35))
        backup = httpx.post(f"{server.url}/admin/v1/backups", timeout=60).json()
        time.sleep(SECONDS * rng.uniform(0.2, 0.35))
        restored = run_cli("--config", str(config_file), "restore", backup["path"], env=state_env)
        assert restored.returncode == 0, restored.stderr
        run_cli("--config", str(config_file), "check", env=state_env)  # beside it, harmless
        time.sleep(SECONDS * 0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    assert log.probes and set(log.probes) == {200}, log.probes

    # Every reader on the same state: the service, the library, the CLI.
    served = [n["node"]["id"] for n in httpx.get(f"{server.url}/admin/v1/nodes").json()]
    listed = run_cli("--config", str(config_file), "nodes", "list", "--json", env=state_env)
    assert [n["id"] for n in json.loads(listed.stdout)] == served
    assert server.terminate() == 0
    with ConfigManager.open(config_file, env=state_env) as cm:
        assert [n.id for n in cm.get_nodes()] == served
        trail = cm.get_audit(since=0, limit=1000)
        while len(trail) % 1000 == 0 and trail:
            more = cm.get_audit(since=trail[-1].revision, limit=1000)
            if not more:
                break
            trail += more

    revisions = [e.revision for e in trail]
    assert revisions == sorted(set(revisions))  # strictly increasing, never reused
    assert log.watched == [r for r in revisions if r <= log.watched[-1]]  # missed nothing
    (restore,) = [e for e in trail if e.action == "restore"]
    # Each acknowledged write is in the trail; it is in the state unless the restore undid it.
    written = _writes_by_node(trail)
    for node_id in log.acknowledged:
        assert node_id in written, f"acknowledged {node_id} is not in the trail"
        undone = written[node_id].undone_by == restore.revision
        assert (node_id in served) != undone, (node_id, written[node_id])
    assert len(log.acknowledged) > 20 and restore.new_value["undone"] is not None
    undone = sum(1 for n in log.acknowledged if written[n].undone_by is not None)
    print(
        f"operation campaign: {len(log.acknowledged)} acknowledged writes ({undone} undone by "
        f"the restore, as the trail says), 0 lost; {sum(log.probes.values())} probes, all 200; "
        f"{len(revisions)} revisions, strictly increasing; the watcher saw "
        f"{len(log.watched)} of them in order"
    )


def _writes_by_node(trail: list[AuditEntry]) -> dict[str, AuditEntry]:
    """The audit entry that added each node (one node, or several at once)."""
    written: dict[str, AuditEntry] = {}
    for entry in trail:
        if entry.action == "add_node":
            written[entry.target] = entry
        elif entry.action == "add_nodes":
            written.update({n["id"]: entry for n in entry.new_value})
    return written
