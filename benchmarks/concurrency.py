"""Concurrent durable writers, side by side in one run (SPEC §12; read ratios, not absolutes).

For 1, 4, 16 and 64 clients, each client writing as fast as it is answered for a fixed time:

- **library, group commit**: threads of one process calling ``add_node`` (unique ids) on one
  ``ConfigManager``, ``durability="full"``;
- **library, one commit per call**: the same with group commit turned off (at most one call per
  commit), to show what sharing commits buys;
- **library, processes**: separate processes each calling ``set_height`` on the same file;
- **HTTP**: ``dapi-config serve`` as a subprocess, keep-alive clients ``POST /admin/v1/nodes``;
- **CLI**: concurrent ``dapi-config nodes add`` processes (each one a full start of the program);
- **PostgreSQL** (when its server binaries are on the machine): ``pgbench`` with a single-row
  UPSERT script on a throwaway cluster with ``fsync=on``, the floor of a networked database;
- **etcd** (when an ``etcd`` binary is on the machine): ``put`` through its JSON gateway.

Every variant of one client count runs in the same round, in a shuffled order; rounds repeat.
Reported: writes/s, p50/p99 latency per call at the client, and CPU per write of the process
that writes (the library's own process, the server, the sum of the CLI processes).

``python -m benchmarks.concurrency [--quick]``; writes ``benchmarks/results/concurrency.json``
and ``concurrency.md`` (the table BENCHMARKS.md carries).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks._harness import quantile, summary
from benchmarks.http_load import _cpu_seconds, _free_port, load, service
from benchmarks.suites import STATIC_CONFIG, make_node
from dapi_config import ConfigManager
from dapi_config.store import connection

RESULTS = Path(__file__).parent / "results"
CLIENTS = (1, 4, 16, 64)


def _config(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(STATIC_CONFIG)
    config.chmod(0o600)
    return config


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}


def _result(latencies: list[float], seconds: float, cpu: float, errors: int) -> dict[str, Any]:
    done = len(latencies)
    return {
        "writes": done,
        "errors": errors,
        "seconds": seconds,
        "writes_per_s": (done - errors) / seconds if seconds else 0.0,
        "p50_ms": quantile(latencies, 0.5) * 1e3 if latencies else float("nan"),
        "p99_ms": quantile(latencies, 0.99) * 1e3 if latencies else float("nan"),
        "cpu_us_per_write": cpu / max(1, done) * 1e6,
    }


def _threads(
    clients: int, seconds: float, call: Callable[[int], object]
) -> tuple[list[float], float, int]:
    """Run ``call(i)`` from ``clients`` threads for ``seconds``; (latencies, elapsed, errors)."""
    ids = itertools.count()
    lock = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    gate = threading.Barrier(clients + 1)
    deadline: list[float] = []

    def worker(slot: int) -> None:
        mine = latencies[slot]
        gate.wait()
        while time.perf_counter() < deadline[0]:
            with lock:
                i = next(ids)
            t0 = time.perf_counter()
            try:
                call(i)
            except Exception as exc:  # a benchmark reports failures instead of hiding them
                errors.append(exc)
            mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(clients)]
    for thread in threads:
        thread.start()
    deadline.append(time.perf_counter() + seconds)
    began = time.perf_counter()
    gate.wait()
    for thread in threads:
        thread.join()
    return [x for per in latencies for x in per], time.perf_counter() - began, len(errors)


# --- the variants -----------------------------------------------------------------------------


class Library:
    """Threads of this process on one manager; ``grouped=False`` turns group commit off."""

    def __init__(self, root: Path, *, grouped: bool) -> None:
        self.grouped = grouped
        self.cm = ConfigManager.open(_config(root), state_path=root / "state.db")
        self.tags = itertools.count()

    def run(self, clients: int, seconds: float) -> dict[str, Any]:
        tag = f"lib{next(self.tags)}"
        saved = connection.GROUP_COMMIT_MAX
        connection.GROUP_COMMIT_MAX = saved if self.grouped else 1
        try:
            cpu0 = time.process_time()
            latencies, elapsed, errors = _threads(
                clients, seconds, lambda i: self.cm.add_node(make_node(i, tag=tag))
            )
            cpu = time.process_time() - cpu0
        finally:
            connection.GROUP_COMMIT_MAX = saved
        return _result(latencies, elapsed, cpu, errors)

    def close(self) -> None:
        self.cm.close()


_HEIGHT_WRITER = """
import sys, time, json
from dapi_config import ConfigManager
cm = ConfigManager.open(sys.argv[1], state_path=sys.argv[2])
start, seconds = float(sys.argv[3]), float(sys.argv[4])
while time.time() < start:
    time.sleep(0.001)
latencies, height, cpu0 = [], int(sys.argv[5]) * 10_000_000, time.process_time()
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    height += 1
    t0 = time.perf_counter()
    cm.set_height(height)
    latencies.append(time.perf_counter() - t0)
print(json.dumps({"latencies": latencies, "cpu": time.process_time() - cpu0}))
cm.close()
"""


class Processes:
    """Separate processes each calling ``set_height`` on one state file."""

    def __init__(self, root: Path) -> None:
        self.config = _config(root)
        self.state = root / "state.db"
        ConfigManager.open(self.config, state_path=self.state).close()

    def run(self, clients: int, seconds: float) -> dict[str, Any]:
        start = time.time() + 1.0 + clients * 0.15  # every process opened before the gate
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _HEIGHT_WRITER,
                    str(self.config),
                    str(self.state),
                    str(start),
                    str(seconds),
                    str(n),
                ],
                stdout=subprocess.PIPE,
                env=_env(),
                text=True,
            )
            for n in range(clients)
        ]
        latencies: list[float] = []
        cpu, errors = 0.0, 0
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 120)
            if proc.returncode != 0:
                errors += 1
                continue
            got = json.loads(out)
            latencies += got["latencies"]
            cpu += got["cpu"]
        return _result(latencies, seconds, cpu, errors)

    def close(self) -> None:
        pass


class Http:
    """``dapi-config serve`` (one process, started once); keep-alive clients."""

    def __init__(self, root: Path) -> None:
        self._service = service(root)
        self.svc = self._service.__enter__()
        self.tags = itertools.count()

    def run(self, clients: int, seconds: float) -> dict[str, Any]:
        cpu0 = _cpu_seconds(self.svc.proc.pid)
        got = load(self.svc.port, clients, 10**9, seconds, tag=f"http{next(self.tags)}")
        cpu = _cpu_seconds(self.svc.proc.pid) - cpu0
        return {
            "writes": got["requests"],
            "errors": got["errors"],
            "seconds": got["seconds"],
            "writes_per_s": got["writes_per_s"],
            "p50_ms": got["p50_ms"],
            "p99_ms": got["p99_ms"],
            "cpu_us_per_write": cpu / max(1, got["requests"]) * 1e6,
        }

    def close(self) -> None:
        self._service.__exit__(None, None, None)


class Cli:
    """Concurrent ``dapi-config nodes add -`` processes, each a whole start of the program."""

    def __init__(self, root: Path) -> None:
        self.config = _config(root)
        self.state = root / "state.db"
        self.ids = itertools.count()
        self.lock = threading.Lock()

    def run(self, clients: int, seconds: float) -> dict[str, Any]:
        def add(_: int) -> None:
            with self.lock:
                i = next(self.ids)
            body = json.dumps(make_node(i, tag="cli").model_dump(mode="json"))
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dapi_config",
                    "--config",
                    str(self.config),
                    "--state",
                    str(self.state),
                    "nodes",
                    "add",
                    "-",
                ],
                input=body,
                check=False,
                capture_output=True,
                text=True,
                env=_env(),
                timeout=120,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-500:])

        before = os.times()
        latencies, elapsed, errors = _threads(clients, seconds, add)
        after = os.times()
        # Every child has been waited for: their CPU is all in the children_* counters.
        cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        return _result(latencies, elapsed, cpu, errors)

    def close(self) -> None:
        pass


class PgBench:
    """pgbench, a single-row UPSERT per transaction, on a throwaway durable cluster."""

    def __init__(self, root: Path) -> None:
        from tests._postgres import local_server

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._server_cm = local_server(durable=True)
        self.server = self._server_cm.__enter__()
        self.url = self.server.fresh_database(empty=True)
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        self.script = root / "upsert.sql"
        self.script.write_text(
            "\\set k random(1, 1000000)\n"
            "INSERT INTO kv(k, v) VALUES (:k, 'x') ON CONFLICT (k) DO UPDATE SET v = excluded.v;\n"
        )
        self.pgbench = (
            str(self.server.control.bins / "pgbench") if self.server.control else "pgbench"
        )
        self.runs = itertools.count()

    def run(self, clients: int, seconds: float) -> dict[str, Any]:
        logs = self.root / f"log{next(self.runs)}"
        logs.mkdir()
        proc = subprocess.run(
            [
                self.pgbench,
                "-n",
                "-f",
                str(self.script),
                "-c",
                str(clients),
                "-j",
                str(min(clients, os.cpu_count() or 1)),
                "-T",
                str(max(1, round(seconds))),
                "-l",
                "--log-prefix",
                str(logs / "pgbench"),
                "-d",
                self.url,
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            cwd=logs,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-1000:])
        latencies: list[float] = []
        for log in logs.iterdir():
            for line in log.read_text().splitlines():
                fields = line.split()
                latencies.append(int(fields[2]) / 1e6)
        tps = next(
            float(line.split("=")[1].split()[0])
            for line in proc.stdout.splitlines()
            if line.startswith("tps")
        )
        return {
            "writes": len(latencies),
            "errors": 0,
            "seconds": seconds,
            "writes_per_s": tps,
            "p50_ms": quantile(latencies, 0.5) * 1e3 if latencies else float("nan"),
            "p99_ms": quantile(latencies, 0.99) * 1e3 if latencies else float("nan"),
            "cpu_us_per_write": None,
        }

    def close(self) -> None:
        self._server_cm.__exit__(None, None, None)


class Etcd:
    """etcd on loopback with its data in a temp dir; ``put`` through the JSON gateway."""

    def __init__(self, root: Path, binary: str) -> None:
        self.port, peer = _free_port(), _free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                "--data-dir",
                str(root / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not self._healthy():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("etcd did not start")
            time.sleep(0.1)
        self.local = threading.local()

    def _healthy(self) -> bool:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/health")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        return False

    def _put(self, i: int) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        key = base64.b64encode(f"node-{i}".encode()).decode()
        value = base64.b64encode(b"x" * 200).decode()
        conn.request("POST", "/v3/kv/put", json.dumps({"key": key, "value": value}))
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"etcd put: HTTP {response.status}")

    def run(self, clients: int, seconds: float) -> dict[str, Any]:
        cpu0 = _cpu_seconds(self.proc.pid)
        latencies, elapsed, errors = _threads(clients, seconds, self._put)
        return _result(latencies, elapsed, _cpu_seconds(self.proc.pid) - cpu0, errors)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


# --- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def variants(root: Path) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """Every variant this machine can run, and why the others are not measured."""
    made: dict[str, Any] = {}
    missing: dict[str, str] = {}
    try:
        made["library, group commit"] = Library(root / "lib-grouped", grouped=True)
        made["library, one commit per call"] = Library(root / "lib-single", grouped=False)
        made["library, processes (set_height)"] = Processes(root / "procs")
        made["HTTP POST /admin/v1/nodes"] = Http(root / "http")
        made["CLI nodes add"] = Cli(root / "cli")
        try:
            made["PostgreSQL (pgbench UPSERT)"] = PgBench(root / "pg")
        except BaseException as exc:  # pytest's skip/fail outcomes are BaseExceptions
            missing["PostgreSQL (pgbench UPSERT)"] = f"not measured: {exc}"
        etcd = shutil.which("etcd")
        if etcd is None:
            missing["etcd (JSON gateway put)"] = "not measured: no etcd binary on this machine"
        else:
            made["etcd (JSON gateway put)"] = Etcd(root, etcd)
        yield made, missing
    finally:
        for variant in made.values():
            with contextlib.suppress(Exception):
                variant.close()


def run(root: Path, clients_list: tuple[int, ...], seconds: float, rounds: int) -> dict[str, Any]:
    samples: dict[str, dict[int, list[dict[str, Any]]]] = {}
    with variants(root) as (made, missing):
        rng = random.Random(16)
        for r in range(rounds):
            for clients in clients_list:
                order = list(made)
                rng.shuffle(order)
                for name in order:
                    got = made[name].run(clients, seconds)
                    samples.setdefault(name, {}).setdefault(clients, []).append(got)
                    print(
                        f"round {r + 1}/{rounds} {clients:>3} clients {name:<34} "
                        f"{got['writes_per_s']:>9.0f}/s p99 {got['p99_ms']:.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    table: dict[str, dict[str, Any]] = {}
    for name, per_clients in samples.items():
        table[name] = {}
        for clients, runs in per_clients.items():
            cpu = [x["cpu_us_per_write"] for x in runs if x["cpu_us_per_write"] is not None]
            table[name][str(clients)] = {
                "writes_per_s": summary([x["writes_per_s"] for x in runs]),
                "p50_ms": summary([x["p50_ms"] for x in runs]),
                "p99_ms": summary([x["p99_ms"] for x in runs]),
                "cpu_us_per_write": summary(cpu) if cpu else None,
                "errors": sum(x["errors"] for x in runs),
            }
    return {
        "table": table,
        "not_measured": missing,
        "rounds": rounds,
        "seconds": seconds,
        "clients": list(clients_list),
        "samples": samples,
    }


def _int(stats: dict[str, float]) -> str:
    return f"{stats['median']:,.0f}"


def _rate(per_clients: dict[str, Any], clients: int) -> float:
    return float(per_clients[str(clients)]["writes_per_s"]["median"])


def markdown(result: dict[str, Any]) -> str:
    clients = result["clients"]
    lines = [
        "| writer | clients | writes/s | p50 ms | p99 ms | CPU µs/write | vs 1 client |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, per in result["table"].items():
        one = per.get("1", {}).get("writes_per_s", {}).get("median")
        for c in clients:
            row = per.get(str(c))
            if row is None:
                continue
            rate = row["writes_per_s"]["median"]
            cpu = "—" if row["cpu_us_per_write"] is None else _int(row["cpu_us_per_write"])
            scale = "—" if not one else f"{rate / one:.1f}×"
            p50, p99 = row["p50_ms"]["median"], row["p99_ms"]["median"]
            lines.append(
                f"| {name} | {c} | {rate:,.0f} | {p50:.1f} | {p99:.1f} | {cpu} | {scale} |"
            )
    for name, why in result["not_measured"].items():
        lines.append(f"| {name} | — | {why} | | | | |")
    grouped = result["table"].get("library, group commit", {})
    single = result["table"].get("library, one commit per call", {})
    gains = [
        f"{c} clients {_rate(grouped, c) / _rate(single, c):.2f}×"
        for c in clients
        if str(c) in grouped and str(c) in single
    ]
    if gains:
        lines.append("")
        lines.append(
            "Group commit against one commit per call (library threads, medians of the rounds): "
            + ", ".join(gains)
            + "."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of short runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--seconds", type=float, default=None, help="length of one run")
    args = parser.parse_args(argv)
    seconds, rounds = (2.0, 1) if args.quick else (5.0, 3)
    seconds = args.seconds or seconds
    clients = tuple(int(c) for c in args.clients.split(","))
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("dapi_config").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dapi-bench-conc-") as tmp:
        result = run(Path(tmp), clients, seconds, rounds)
    result["command"] = "python -m benchmarks.concurrency " + " ".join(argv or sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrency.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "concurrency.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
