"""dapi-config beside etcd and beside its own floor, under one load generator (SPEC §12).

What an operator compares us with is another configuration store on the same machine. Every
server of the table runs here, one after the other in one run, each driven by the same ``wrk``
load (a compiled client, so the client's CPU stays small and off the server's bill): durable
writes of the same node document, cycling over 1,000 keys, from 1 and from 16 keep-alive
connections, for a fixed time each. Rounds repeat the whole set in a shuffled order; the table
gives medians.

- **floor**: :mod:`benchmarks.floor`, the least the node write must do (decode, type checks, one
  SQLite writer thread with group commit, WAL + ``synchronous=FULL``, an UPSERT and an audit row
  with the old and new value), on uvicorn + httptools + uvloop: the physical line;
- **serve**: ``dapi-config serve`` on SQLite, one worker and ``--workers 2`` (when the build has
  it), ``POST /admin/v1/nodes``;
- **serve on PostgreSQL**: the same over a throwaway cluster (skipped without the server
  binaries or the ``postgres`` extra);
- **serve at REV** (``--baseline REV``): an earlier commit's ``serve`` from a git worktree,
  beside today's in the same rounds;
- **etcd**: etcd 3.4's JSON gateway, ``POST /v3/kv/put`` of the same document (apt
  ``etcd-server``; skipped with the reason when absent). etcd fsyncs every commit as well.

CPU per write is the server's process tree (every worker included), user + system, over the
load, divided by the writes answered. ``python -m benchmarks.peers [--quick]``; writes
``benchmarks/results/peers.{json,md}``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._harness import summary
from benchmarks.http_load import _free_port, stop, wait_until_ready
from benchmarks.suites import STATIC_CONFIG, make_node

RESULTS = Path(__file__).parent / "results"
KEYS = 1_000
CLIENTS = (1, 16)

_LUA = r"""
local bodies = {%(bodies)s}
local path = "%(path)s"
local headers = {["Content-Type"] = "application/json"}
local counter = 0
local threads = 0

function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end

function init(args)
  counter = offset or 0
end

function request()
  counter = counter + 1
  return wrk.format("POST", path, headers, bodies[(counter %% #bodies) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "errors": %%d, "p50_us": %%d, "p99_us": %%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua(path: str, bodies: list[str]) -> str:
    quoted = ",\n".join(f"[==[{b}]==]" for b in bodies)
    return _LUA % {"bodies": quoted, "path": path}


def node_bodies() -> list[str]:
    """The node documents of the load: one per key, as ``make_node`` builds them."""
    return [json.dumps(make_node(i, tag="peer").model_dump(mode="json")) for i in range(KEYS)]


def etcd_bodies(documents: list[str]) -> list[str]:
    """The same documents as etcd's JSON gateway takes them (base64 key and value)."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [
        json.dumps({"key": b64(f"/nodes/{json.loads(d)['id']}"), "value": b64(d)})
        for d in documents
    ]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and every live descendant (the workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, IndexError):
            fields = (Path("/proc") / str(current) / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        pending.extend(children.get(current, []))
    return total


@dataclass
class Server:
    key: str
    name: str
    start: Callable[[Path], contextlib.AbstractContextManager[tuple[int, int]]]
    path: str
    bodies: Callable[[], list[str]]
    missing: str | None = None


@contextlib.contextmanager
def _process(
    argv: list[str], root: Path, port: int, probe: str, env: dict[str, str] | None = None
) -> Iterator[tuple[int, int]]:
    log = root / "server.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
        )
    try:
        wait_until_ready(proc, port, probe, log, argv[0])
        yield proc.pid, port
    finally:
        stop(proc)


def _serve_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    env.update({"CONFIG_EXPORT_INTERVAL": "0", "API_BACKUP_INTERVAL": "1d"})
    env.update(extra or {})
    return env


def serve(
    workers: int, state_url: str | None = None, source: Path | None = None
) -> Callable[[Path], Any]:
    """``dapi-config serve``; ``source``: the ``src`` folder of another checkout to run
    instead of the installed package (the baseline of an A/B in the same run)."""

    @contextlib.contextmanager
    def start(root: Path) -> Iterator[tuple[int, int]]:
        config = root / "config.yaml"
        config.write_text(STATIC_CONFIG)
        config.chmod(0o600)
        port = _free_port()
        extra = {"API_STATE_URL": state_url} if state_url else {}
        if source is not None:
            extra["PYTHONPATH"] = str(source)
        argv = [sys.executable, "-m", "dapi_config", "--config", str(config)]
        if state_url is None:
            argv += ["--state", str(root / "state.db")]
        argv += ["serve", "--port", str(port)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        with _process(argv, root, port, "/readyz", _serve_env(extra)) as running:
            yield running

    return start


@contextlib.contextmanager
def floor(root: Path) -> Iterator[tuple[int, int]]:
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.floor:app",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = dict(os.environ, FLOOR_DB=str(root / "floor.db"))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    with _process(argv, root, port, "/", env) as running:
        yield running


@contextlib.contextmanager
def etcd(root: Path) -> Iterator[tuple[int, int]]:
    port, peer = _free_port(), _free_port()
    argv = [
        "etcd",
        "--name",
        "bench",
        "--data-dir",
        str(root / "etcd"),
        "--listen-client-urls",
        f"http://127.0.0.1:{port}",
        "--advertise-client-urls",
        f"http://127.0.0.1:{port}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-cluster",
        f"bench=http://127.0.0.1:{peer}",
        "--log-level",
        "error",
    ]
    with _process(argv, root, port, "/health", dict(os.environ)) as running:
        yield running


def _has_server_extras(*modules: str) -> str | None:
    import importlib.util

    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(absent)}" if absent else None


def _baseline(stack: contextlib.ExitStack, revision: str) -> Path:
    """A checkout of ``revision`` of this repository (a temporary git worktree); its ``src``."""
    repo = Path(__file__).resolve().parent.parent
    tree = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dapi-baseline-")))
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree / "wt"), revision],
        check=True,
        capture_output=True,
    )
    stack.callback(
        subprocess.run,
        ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree / "wt")],
        check=False,
        capture_output=True,
    )
    return tree / "wt" / "src"


def servers(
    pg_url: str | None, pg_missing: str | None, baseline: tuple[str, Path] | None = None
) -> list[Server]:
    documents = node_bodies()
    found = [
        Server("floor", "floor: raw ASGI + SQLite group commit", floor, "/", lambda: documents),
        Server(
            "serve",
            "dapi-config serve (SQLite, 1 worker)",
            serve(1),
            "/admin/v1/nodes",
            lambda: documents,
        ),
        Server(
            "serve-2",
            "dapi-config serve (SQLite, 2 workers)",
            serve(2),
            "/admin/v1/nodes",
            lambda: documents,
        ),
        Server(
            "serve-pg",
            "dapi-config serve (PostgreSQL, 1 worker)",
            serve(1, pg_url),
            "/admin/v1/nodes",
            lambda: documents,
            missing=pg_missing,
        ),
        Server(
            "etcd",
            "etcd 3.4 (JSON gateway)",
            etcd,
            "/v3/kv/put",
            lambda: etcd_bodies(documents),
            missing=None if shutil.which("etcd") else "etcd not installed (apt etcd-server)",
        ),
    ]
    found[0].missing = _has_server_extras("uvloop", "httptools")
    if baseline is not None:
        revision, source = baseline
        found.append(
            Server(
                "baseline",
                f"dapi-config serve at {revision} (SQLite, 1 worker)",
                serve(1, source=source),
                "/admin/v1/nodes",
                lambda: documents,
            )
        )
    return found


_WRK = re.compile(r"^WRKJSON (\{.*\})$", re.MULTILINE)


def drive(
    port: int, path: str, script: Path, *, clients: int, seconds: float, pid: int
) -> dict[str, Any]:
    """One ``wrk`` load; its numbers and the server tree's CPU per answered write."""
    threads = min(clients, 2)
    before = tree_cpu_seconds(pid)
    done = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(clients),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = tree_cpu_seconds(pid) - before
    match = _WRK.search(done.stdout)
    if match is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout} {done.stderr}")
    raw = json.loads(match.group(1))
    answered = max(1, raw["requests"] - raw["errors"])
    return {
        "writes_per_s": answered / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3,
        "errors": raw["errors"],
        "cpu_us_per_write": cpu / answered * 1e6,
    }


def run(
    rounds: int, seconds: float, only: set[str] | None = None, baseline: str | None = None
) -> dict[str, Any]:
    """``rounds`` of every server (or of those whose key is in ``only``); ``baseline``: a git
    revision whose ``serve`` runs beside (key ``baseline``)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt wrk): the peers benchmark needs it")
    with contextlib.ExitStack() as stack:
        pg_url, pg_missing = (
            _postgres(stack) if only is None or "serve-pg" in only else (None, "not asked for")
        )
        checkout = None if baseline is None else (baseline, _baseline(stack, baseline))
        table = [
            s
            for s in servers(pg_url, pg_missing, checkout)
            if only is None or s.key in only or s.key == "baseline"
        ]
        samples: dict[str, dict[int, list[dict[str, Any]]]] = {s.name: {} for s in table}
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dapi-peers-")))
        rng = random.Random(34)
        for r in range(rounds):
            order = [s for s in table if s.missing is None]
            rng.shuffle(order)
            for server in order:
                root = work / f"{r}-{table.index(server)}"
                root.mkdir()
                script = root / "load.lua"
                script.write_text(_lua(server.path, server.bodies()))
                try:
                    with server.start(root) as (pid, port):
                        # Warm up: the first writes create the rows, later ones replace them.
                        drive(port, server.path, script, clients=16, seconds=1, pid=pid)
                        for clients in CLIENTS:
                            result = drive(
                                port, server.path, script, clients=clients, seconds=seconds, pid=pid
                            )
                            samples[server.name].setdefault(clients, []).append(result)
                except (RuntimeError, NotImplementedError, subprocess.CalledProcessError) as exc:
                    server.missing = "did not run: " + " ".join(str(exc).split())[-300:]
                print(f"round {r + 1}/{rounds}: {server.name} done", file=sys.stderr)
    return {
        "rounds": rounds,
        "seconds_per_load": seconds,
        "servers": [
            {
                "name": s.name,
                "missing": s.missing,
                "by_clients": {
                    str(c): {
                        key: summary([x[key] for x in runs])
                        for key in ("writes_per_s", "p50_ms", "p99_ms", "cpu_us_per_write")
                    }
                    | {"errors": sum(x["errors"] for x in runs)}
                    for c, runs in samples[s.name].items()
                },
            }
            for s in table
        ],
    }


def _postgres(stack: contextlib.ExitStack) -> tuple[str | None, str | None]:
    missing = _has_server_extras("psycopg")
    if missing:
        return None, missing
    try:
        from tests._postgres import local_server

        server = stack.enter_context(local_server(durable=True))
    except Exception as exc:  # a machine without the server binaries: reported, not fatal
        return None, f"PostgreSQL not available: {exc}"
    return server.fresh_database(), None


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| server | clients | writes/s | p50 ms | p99 ms | server CPU per write |",
        "|---|---|---|---|---|---|",
    ]
    for server in result["servers"]:
        if server["missing"]:
            lines.append(f"| {server['name']} | – | {server['missing']} | | | |")
            continue
        for clients, row in server["by_clients"].items():
            lines.append(
                f"| {server['name']} | {clients} | {row['writes_per_s']['median']:,.0f} | "
                f"{row['p50_ms']['median']:.2f} | {row['p99_ms']['median']:.1f} | "
                f"{row['cpu_us_per_write']['median']:,.0f} µs |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s loads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--servers", help="only these, comma-separated: floor, serve, serve-2, serve-pg, etcd"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    parser.add_argument(
        "--baseline", metavar="REV", help="also serve this git revision (an A/B in one run)"
    )
    args = parser.parse_args(argv)
    rounds, seconds = (1, 3.0) if args.quick else (args.rounds, args.seconds)
    only = set(args.servers.split(",")) if args.servers else None
    result = run(rounds, seconds, only, args.baseline)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "peers.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
