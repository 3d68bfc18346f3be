"""Several ``dapi-config serve`` replicas on one PostgreSQL state, as real processes: 16 clients
spread over 3 replicas add, replace and remove nodes; afterwards every acknowledged change is
there exactly once and nothing else, whichever replica is asked. A replica killed with SIGKILL
mid-load loses nothing it acknowledged."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests._postgres import PgServer
from tests.api.conftest import ServeProcess
from tests.api.test_nodes import NODES
from tests.conftest import TEST_STATE_KEY

Serve = Callable[..., ServeProcess]
REPLICAS = 3
CLIENTS = 16
OPS_PER_CLIENT = 24


def small_node(node_id: str, max_concurrent: int = 1) -> dict[str, Any]:
    return {
        "id": node_id,
        "host": "10.1.2.3",
        "inference_port": 5000,
        "poc_port": 8080,
        "max_concurrent": max_concurrent,
    }


def test_replicas_keep_exactly_the_acknowledged_changes(
    pg_server: PgServer, config_file: Path, serve_process: Serve
) -> None:
    env = {"API_STATE_URL": pg_server.fresh_database(), "API_STATE_KEY": TEST_STATE_KEY}
    replicas = [serve_process(config_file, env=env) for _ in range(REPLICAS)]
    # id -> the max_concurrent of its last acknowledged write (None: acknowledged removal).
    final: dict[str, int | None] = {}
    shared_winners: list[str] = []
    lock = threading.Lock()
    failures: list[str] = []

    def client(index: int) -> None:
        mine: list[str] = []
        with httpx.Client(base_url=replicas[index % REPLICAS].url, timeout=60) as http:
            for k in range(OPS_PER_CLIENT):
                if k % 6 == 0:
                    # Every client races to create the same id through the all-or-nothing
                    # batch route: exactly one may win, on whichever replica.
                    shared = f"shared-{k}"
                    r = http.post(f"{NODES}/batch", json=[small_node(shared)])
                    if r.status_code == 201:
                        with lock:
                            shared_winners.append(shared)
                            final[shared] = 1
                    elif r.status_code != 409:
                        failures.append(f"batch {shared}: {r.status_code} {r.text}")
                    continue
                if k % 4 == 3 and mine:
                    victim = mine.pop(0)
                    r = http.delete(f"{NODES}/{victim}")
                    if r.status_code != 200:
                        failures.append(f"delete {victim}: {r.status_code} {r.text}")
                    with lock:
                        final[victim] = None
                    continue
                if k % 4 == 2 and mine:
                    target = mine[-1]
                    r = http.put(f"{NODES}/{target}", json=small_node(target, 100 + k))
                    if r.status_code != 200:
                        failures.append(f"put {target}: {r.status_code} {r.text}")
                    with lock:
                        final[target] = 100 + k
                    continue
                node_id = f"c{index}-{k}"
                r = http.post(NODES, json=small_node(node_id))
                if r.status_code != 200:
                    failures.append(f"add {node_id}: {r.status_code} {r.text}")
                    continue
                mine.append(node_id)
                with lock:
                    final[node_id] = 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(shared_winners) == sorted({f"shared-{k}" for k in range(0, OPS_PER_CLIENT, 6)})
    expected = {node_id: value for node_id, value in final.items() if value is not None}
    for replica in replicas:
        listed = httpx.get(f"{replica.url}{NODES}").json()
        ids = [n["node"]["id"] for n in listed]
        assert len(ids) == len(set(ids))  # each change there once
        assert {n["node"]["id"]: n["node"]["max_concurrent"] for n in listed} == expected
    # Every change left one audit row, in one sequence without gaps, seen alike everywhere.
    audits = [httpx.get(f"{r.url}/admin/v1/audit", params={"limit": 1000}).json() for r in replicas]
    revisions = [e["revision"] for e in audits[0]["entries"]]
    assert revisions == list(range(1, len(revisions) + 1))
    assert all(a == audits[0] for a in audits)


def test_a_replica_killed_mid_load_loses_nothing_acknowledged(
    pg_server: PgServer, config_file: Path, serve_process: Serve
) -> None:
    env = {"API_STATE_URL": pg_server.fresh_database(), "API_STATE_KEY": TEST_STATE_KEY}
    victim, survivor = serve_process(config_file, env=env), serve_process(config_file, env=env)
    acknowledged: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=victim.url, timeout=10) as http:
            k = 0
            while not stop.is_set():
                try:
                    r = http.post(NODES, json=small_node(f"k{k}"))
                except httpx.HTTPError:
                    return  # the replica died under us: this write is unknown, not acked
                if r.status_code == 200:
                    acknowledged.append(f"k{k}")
                k += 1

    writer = threading.Thread(target=load)
    writer.start()
    while len(acknowledged) < 30:
        threading.Event().wait(0.01)
    victim.terminate(signal.SIGKILL)
    stop.set()
    writer.join()
    listed = {n["node"]["id"] for n in httpx.get(f"{survivor.url}{NODES}").json()}
    assert set(acknowledged) <= listed
    # At most the one write in flight at the kill is there without an acknowledgement.
    assert len(listed - set(acknowledged)) <= 1
