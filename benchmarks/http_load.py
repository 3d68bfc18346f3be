"""Node writes through the running service: ``dapi-config serve`` as a real subprocess, 16
concurrent keep-alive clients on loopback, bounded in count and time."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._harness import quantile, summary
from benchmarks.suites import STATIC_CONFIG, make_node

STARTUP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of ``pid`` in KiB (empty where /proc is missing)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (NaN where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_until_ready(
    proc: subprocess.Popen[bytes], port: int, path: str, log: Path, name: str
) -> None:
    """Poll ``GET path`` on ``port`` until it answers 200 (raise with the log's tail if the
    process exits or :data:`STARTUP_TIMEOUT_S` passes)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready")
        time.sleep(0.1)


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


@contextlib.contextmanager
def service(root: Path, args: Sequence[str] = ()) -> Iterator[Service]:
    """``dapi-config serve ARGS`` on a free loopback port over a fresh state file."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(STATIC_CONFIG)
    config.chmod(0o600)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    env.update({"CONFIG_EXPORT_INTERVAL": "0", "API_BACKUP_INTERVAL": "1d"})
    log = root / "serve.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dapi_config",
                "--config",
                str(config),
                "--state",
                str(root / "state.db"),
                "serve",
                "--port",
                str(port),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
        )
    try:
        wait_until_ready(proc, port, "/readyz", log, "dapi-config serve")
        yield Service(proc, port, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s: a server under test always ends."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


#: The ``i``-th request of a load: method, path, body (or None), headers.
Request = tuple[str, str, str | None, dict[str, str]]


def node_post(tag: str) -> Callable[[int], Request]:
    """``POST /admin/v1/nodes`` of a new node per request (ids made unique by ``tag``)."""

    def request(i: int) -> Request:
        body = json.dumps(make_node(i, tag=tag).model_dump(mode="json"))
        return "POST", "/admin/v1/nodes", body, {"Content-Type": "application/json"}

    return request


def load(
    port: int,
    clients: int,
    requests: int,
    max_seconds: float,
    tag: str,
    *,
    request: Callable[[int], Request] | None = None,
) -> dict[str, Any]:
    """``requests`` requests spread over ``clients`` keep-alive threads (stop at max_seconds);
    by default :func:`node_post`. Any status but 200/201 counts as an error."""
    make_request = request or node_post(tag)
    ids = itertools.count()
    id_lock = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start_gate = threading.Barrier(clients + 1)
    deadline_box: list[float] = []

    def worker(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = latencies[slot]
        try:
            start_gate.wait()
            deadline = deadline_box[0]
            while time.perf_counter() < deadline:
                with id_lock:
                    i = next(ids)
                if i >= requests:
                    return
                method, path, body, headers = make_request(i)
                t0 = time.perf_counter()
                conn.request(method, path, body, headers)
                response = conn.getresponse()
                response.read()
                mine.append(time.perf_counter() - t0)
                if response.status not in (200, 201):
                    errors.append(f"HTTP {response.status}")
        except Exception as exc:  # a benchmark reports failures instead of hiding them
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    deadline_box.append(time.perf_counter() + max_seconds)
    began = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    flat = [x for per in latencies for x in per]
    return {
        "requests": len(flat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": elapsed,
        "writes_per_s": (len(flat) - len(errors)) / elapsed if elapsed else 0.0,
        "p50_ms": quantile(flat, 0.50) * 1e3 if flat else float("nan"),
        "p99_ms": quantile(flat, 0.99) * 1e3 if flat else float("nan"),
        "max_ms": max(flat) * 1e3 if flat else float("nan"),
    }


def _count_nodes(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/admin/v1/nodes")
        return len(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def run(root: Path, clients: int, requests: int, max_seconds: float, runs: int) -> dict[str, Any]:
    """Start the service, take its idle RSS, run ``runs`` loads, take RSS again, stop it."""
    with service(root) as svc:
        idle = _rss_kib(svc.proc.pid)
        results = []
        for r in range(runs):
            cpu_before = _cpu_seconds(svc.proc.pid)
            result = load(svc.port, clients, requests, max_seconds, tag=f"http{r}")
            cpu = _cpu_seconds(svc.proc.pid) - cpu_before
            result["server_cpu_ms_per_request"] = cpu / max(1, result["requests"]) * 1e3
            result["server_cpu_busy"] = cpu / result["seconds"] if result["seconds"] else 0.0
            results.append(result)
        loaded = _rss_kib(svc.proc.pid)  # before the count: a 10,000-node reply is not the load
        threads = _threads(svc.proc.pid)
        stored = _count_nodes(svc.port)
    ok = sum(x["requests"] - x["errors"] for x in results)
    return {
        "clients": clients,
        "requests_per_run": requests,
        "max_seconds_per_run": max_seconds,
        "runs": results,
        "writes_per_s": summary([x["writes_per_s"] for x in results]),
        "p50_ms": summary([x["p50_ms"] for x in results]),
        "p99_ms": summary([x["p99_ms"] for x in results]),
        "errors": sum(x["errors"] for x in results),
        "server_cpu_ms_per_request": summary([x["server_cpu_ms_per_request"] for x in results]),
        "server_cpu_busy": summary([x["server_cpu_busy"] for x in results]),
        "nodes_stored": stored,
        "nodes_acknowledged": ok,
        "rss_idle_mib": idle.get("VmRSS", 0) / 1024,
        "rss_after_mib": loaded.get("VmRSS", 0) / 1024,
        "rss_peak_mib": loaded.get("VmHWM", 0) / 1024,
        "server_threads": threads,
    }
