"""The hostile-client campaign: ``dapi-config serve`` with an admin token, under rounds of
attacks while an honest client keeps writing; after each round the service must still answer,
stay small, leak nothing, and hold every acknowledged write.

Attacks per round (each repeated a few times, in parallel with the honest writer):

- a batch of 100,000 integers, with and without the token; JSON nested 50,000 deep; a node
  with a 1 MB version; a 17 MB body;
- invented HTTP methods and WebDAV's; paths with NULs, percent-escapes and 4 KB segments;
- wrong, empty and oversized bearer tokens;
- 100 connections that send half a request line and stay silent (under a lowered open-file
  limit, so the connection cap is reached);
- a flood of headers.

``python -m tests.faults.hostile --rounds 20`` prints the result as JSON (``make stress`` runs
a long campaign through pytest).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dapi_config.api.limits import HEADER_TIMEOUT_S
from tests.api.conftest import start_serve_process

TOKEN = "hostile-campaign-token-5f0e1d2c3b4a"
OPEN_FILES = 512
SILENT_CONNECTIONS = 100
#: Bounds the campaign holds the service to.
MAX_METRICS_BYTES = 256 * 1024
MAX_RSS_MB = 400.0


@dataclass
class HostileResult:
    rounds: int = 0
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    max_livez_s: float = 0.0
    max_rss_mb: float = 0.0
    max_metrics_bytes: int = 0
    failures: list[str] = field(default_factory=list)


def _node(node_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "host": "10.0.0.7", "inference_port": 5000, "poc_port": 8080, **extra}


class _Attacker:
    def __init__(self, url: str, port: int, rng: random.Random) -> None:
        self.url = url
        self.port = port
        self.rng = rng
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()

    def _send(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> None:
        try:
            status = client.request(method, path, **kwargs).status_code
        except httpx.HTTPError:
            status = 0  # the server closed the connection (a limit), not an answer
        with self.lock:
            self.statuses[status] += 1

    def bodies(self) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        bomb = json.dumps(list(range(100_000))).encode()
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for _ in range(2):
                self._send(client, "POST", "/admin/v1/nodes/batch", content=bomb)  # no token
                self._send(client, "POST", "/admin/v1/nodes/batch", content=bomb, headers=auth)
                self._send(client, "POST", "/admin/v1/nodes", content=b"[" * 50_000, headers=auth)
                big = json.dumps(_node("big", version="v" * 1_000_000)).encode()
                self._send(client, "POST", "/admin/v1/nodes", content=big, headers=auth)
                self._send(
                    client, "POST", "/admin/v1/nodes", content=b" " * (17 << 20), headers=auth
                )

    def methods_and_paths(self) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}  # the worse case: an attacker with the token
        with httpx.Client(base_url=self.url, timeout=30, headers=auth) as client:
            for i in range(40):
                # Invented methods end at the HTTP parser (400); WebDAV's, which it knows,
                # reach the app, which serves none of them (405).
                self._send(client, f"M{self.rng.randrange(10**6)}", "/admin/v1/nodes")
                self._send(client, "PROPFIND", "/admin/v1/nodes")
                self._send(client, "GET", f"/admin/v1/nodes/%00{i}")
                self._send(client, "GET", "/admin/v1/nodes/" + "a" * 4096)
                self._send(client, "GET", f"/%2e%2e/%2e%2e/etc/passwd{i}")

    def tokens(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for token in ("wrong", "", TOKEN[:-1], TOKEN + "x", "x" * 8000):
                for _ in range(4):
                    self._send(
                        client,
                        "DELETE",
                        "/admin/v1/nodes/honest-0",
                        headers={"Authorization": f"Bearer {token}"},
                    )

    def headers(self) -> None:
        many = {f"X-Flood-{i}": "y" * 200 for i in range(300)}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for _ in range(5):
                self._send(client, "GET", "/livez", headers=many)

    def silent(self, hold: float) -> None:
        sockets: list[socket.socket] = []
        try:
            for _ in range(SILENT_CONNECTIONS):
                try:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    sock.sendall(b"POST /admin/v1/nodes HTTP/1.1\r\nHost: x\r\n")
                    sockets.append(sock)
                except OSError:
                    break
            time.sleep(hold)
        finally:
            for sock in sockets:
                sock.close()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _livez_seconds(url: str, within: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            if httpx.get(f"{url}/livez", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            time.sleep(0.1)
    return None


def hostile_campaign(
    directory: Path, rounds: int, *, seed: int = 7, workers: int = 1
) -> HostileResult:
    """Run ``rounds`` rounds of attacks against a fresh ``serve --workers WORKERS`` in
    ``directory``."""
    rng = random.Random(seed)
    config = directory / "config.yaml"
    config.write_text(f"api:\n  port: 8080\n  admin_token: {TOKEN}\n")
    config.chmod(0o600)
    server = start_serve_process(config, "--workers", str(workers), open_files=OPEN_FILES)
    port = int(server.url.rsplit(":", 1)[1])
    result = HostileResult()
    acknowledged: list[str] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        attacker = _Attacker(server.url, port, rng)
        for round_no in range(rounds):
            stop = threading.Event()

            def honest(round_no: int = round_no, stop: threading.Event = stop) -> None:
                with httpx.Client(base_url=server.url, timeout=30, headers=auth) as client:
                    i = 0
                    while not stop.is_set():
                        node_id = f"honest-{round_no}-{i}"
                        try:
                            answer = client.post("/admin/v1/nodes", json=_node(node_id))
                        except httpx.HTTPError:
                            answer = None
                        if answer is not None and answer.status_code == 200:
                            acknowledged.append(node_id)
                        i += 1
                        time.sleep(0.01)

            work = [
                threading.Thread(target=honest),
                threading.Thread(target=attacker.bodies),
                threading.Thread(target=attacker.methods_and_paths),
                threading.Thread(target=attacker.tokens),
                threading.Thread(target=attacker.headers),
                threading.Thread(target=attacker.silent, args=(2.0,)),
            ]
            for thread in work:
                thread.start()
            for thread in work[1:]:
                thread.join(300)
            stop.set()
            work[0].join(60)
            livez = _livez_seconds(server.url, HEADER_TIMEOUT_S * 3)
            if livez is None:
                result.failures.append(f"round {round_no}: /livez did not answer")
            else:
                result.max_livez_s = max(result.max_livez_s, livez)
            metrics = len(httpx.get(f"{server.url}/metrics", timeout=30).content)
            result.max_metrics_bytes = max(result.max_metrics_bytes, metrics)
            result.max_rss_mb = max(result.max_rss_mb, _rss_mb(server.proc.pid))
            result.rounds += 1
        stored = {
            n["node"]["id"]
            for n in httpx.get(f"{server.url}/admin/v1/nodes", headers=auth, timeout=60).json()
        }
        lost = [n for n in acknowledged if n not in stored]
        if lost:
            result.failures.append(f"{len(lost)} acknowledged writes missing: {lost[:5]}")
        result.acknowledged = len(acknowledged)
        result.statuses = {str(k): v for k, v in sorted(attacker.statuses.items())}
        result.requests = sum(attacker.statuses.values())
        server_errors = {k: v for k, v in attacker.statuses.items() if k >= 500}
        if server_errors:
            result.failures.append(f"5xx answers to attacks: {server_errors}")
        if result.max_metrics_bytes > MAX_METRICS_BYTES:
            result.failures.append(f"/metrics grew to {result.max_metrics_bytes} bytes")
        if result.max_rss_mb > MAX_RSS_MB:
            result.failures.append(f"the server's memory reached {result.max_rss_mb:.0f} MiB")
    finally:
        code = server.terminate()
        server.stop()
    log = server.log()
    if code != 0:
        result.failures.append(f"serve exited with {code}")
    if TOKEN in log:
        result.failures.append("the admin token appears in the log")
    if "Traceback" in log:
        result.failures.append("a traceback in the log")
    if len(log) > 20_000_000:
        result.failures.append(f"the log grew to {len(log)} bytes")
    return result


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(asdict(hostile_campaign(Path(folder), args.rounds, seed=args.seed))))


if __name__ == "__main__":
    main()
