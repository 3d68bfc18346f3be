"""ASGI servers and HTTP parsers side by side, under the product's own app (SPEC §12).

Which server should ``dapi-config serve`` run on? Each variant serves the real admin app
(``create_app`` over a fresh state file, ``durability="full"``) in its own process on loopback;
keep-alive clients then run, for a fixed time each:

- ``GET /livez``: the cost of the server, the framework and the middleware, with no work;
- ``POST /admin/v1/nodes``: a durable node write, the route the performance issue measures.

Variants: uvicorn with its h11 parser (what ``serve`` ran before), uvicorn with httptools,
uvicorn with httptools on uvloop (what ``serve`` runs), and granian (its Rust HTTP stack, one
worker); and, as the floor of each uvicorn stack, a bare ASGI app that answers ``200 ok`` to
everything. A variant whose package is missing is reported "not measured". Every variant of one
workload and client count runs in the same round, in a shuffled order; rounds repeat; the table
gives medians. CPU is the server's process tree (user + system), per request.

``python -m benchmarks.servers [--quick]``; writes ``benchmarks/results/servers.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._harness import summary
from benchmarks.http_load import Request, _free_port, load, node_post, wait_until_ready
from benchmarks.suites import STATIC_CONFIG

RESULTS = Path(__file__).parent / "results"

#: name -> (server, parser, event loop, app, the packages it needs)
VARIANTS: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {
    "uvicorn + h11 (serve before)": ("uvicorn", "h11", "asyncio", "app", ()),
    "uvicorn + httptools": ("uvicorn", "httptools", "asyncio", "app", ("httptools",)),
    "uvicorn + httptools + uvloop (serve)": (
        "uvicorn",
        "httptools",
        "uvloop",
        "app",
        ("httptools", "uvloop"),
    ),
    "granian (1 worker)": ("granian", "", "", "app", ("granian",)),
    "floor: bare ASGI on uvicorn + h11": ("uvicorn", "h11", "asyncio", "bare", ()),
    "floor: bare ASGI on uvicorn + httptools + uvloop": (
        "uvicorn",
        "httptools",
        "uvloop",
        "bare",
        ("httptools", "uvloop"),
    ),
}
WORKLOADS = ("GET /livez", "POST /admin/v1/nodes")


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: read the body, answer ``200 ok``; no framework, no work."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def product_app() -> Any:
    """The admin app over the state in ``$BENCH_SERVER_DIR`` (granian imports it by name)."""
    from dapi_config import ConfigManager
    from dapi_config.api import create_app

    root = Path(os.environ["BENCH_SERVER_DIR"])
    cm = ConfigManager.open(root / "config.yaml", root / "state.db", env={})
    return create_app(cm)


def _serve(name: str, port: int) -> None:
    """Run variant ``name`` on ``port`` until SIGTERM (the server process's side)."""
    server, parser, loop, app_kind, _ = VARIANTS[name]
    # One line per request to stderr (a file), as serve logs: the same work in every variant.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if server == "granian":
        from granian.constants import Interfaces
        from granian.server import Server

        target = (
            "benchmarks.servers:product_app" if app_kind == "app" else "benchmarks.servers:bare_app"
        )
        Server(
            target,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            workers=1,
            factory=app_kind == "app",
            log_access=False,
        ).serve()
        return
    import uvicorn

    app = product_app() if app_kind == "app" else bare_app
    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=parser,
            loop=loop,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    ).run()


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and every descendant, so far."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return total


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    port: int


@contextlib.contextmanager
def running(name: str, root: Path) -> Iterator[Running]:
    """Variant ``name`` serving a fresh state in ``root`` on a free loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(STATIC_CONFIG)
    config.chmod(0o600)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    env["BENCH_SERVER_DIR"] = str(root)
    with open(root / "server.log", "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.servers", "--serve", name, "--port", str(port)],
            stdout=log_file,
            stderr=log_file,
            env=env,
            start_new_session=True,
        )
    try:
        wait_until_ready(proc, port, "/livez", root / "server.log", name)
        yield Running(name, proc, port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def drive(server: Running, workload: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive clients running ``workload`` for ``seconds``."""
    tag = f"b{random.randrange(1 << 30)}"
    request = node_post(tag) if workload.startswith("POST") else _livez
    cpu0 = _tree_cpu_seconds(server.proc.pid)
    got = load(server.port, clients, 10**9, seconds, tag, request=request)
    cpu = _tree_cpu_seconds(server.proc.pid) - cpu0
    return {
        "requests": got["requests"],
        "errors": got["errors"],
        "first_error": got["first_error"],
        "per_s": got["writes_per_s"],
        "p50_ms": got["p50_ms"],
        "p99_ms": got["p99_ms"],
        "cpu_us": cpu / max(1, got["requests"]) * 1e6,
    }


def _livez(_: int) -> Request:
    return "GET", "/livez", None, {}


def missing_packages(name: str) -> list[str]:
    return [p for p in VARIANTS[name][4] if importlib.util.find_spec(p) is None]


def run(
    root: Path, names: list[str], clients_list: tuple[int, ...], seconds: float, rounds: int
) -> dict[str, Any]:
    not_measured = {
        n: "not measured: " + ", ".join(missing_packages(n)) + " not installed"
        for n in names
        if missing_packages(n)
    }
    names = [n for n in names if n not in not_measured]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rng = random.Random(19)
    with contextlib.ExitStack() as stack:
        servers = {n: stack.enter_context(running(n, root / f"v{i}")) for i, n in enumerate(names)}
        for server in servers.values():  # warm up: imports, statements, page cache
            for workload in WORKLOADS:
                drive(server, workload, 4, min(0.5, seconds))
        for r in range(rounds):
            for workload in WORKLOADS:
                for clients in clients_list:
                    order = list(names)
                    rng.shuffle(order)
                    for n in order:
                        got = drive(servers[n], workload, clients, seconds)
                        key = f"{workload}|{clients}"
                        samples.setdefault(n, {}).setdefault(key, []).append(got)
                        print(
                            f"round {r + 1}/{rounds} {workload:<22} {clients:>3} clients "
                            f"{n:<48} {got['per_s']:>7.0f}/s cpu {got['cpu_us']:>6.0f} us "
                            f"errors {got['errors']}",
                            file=sys.stderr,
                            flush=True,
                        )
    table = {
        n: {
            key: {
                "per_s": summary([x["per_s"] for x in runs]),
                "p50_ms": summary([x["p50_ms"] for x in runs]),
                "p99_ms": summary([x["p99_ms"] for x in runs]),
                "cpu_us": summary([x["cpu_us"] for x in runs]),
                "errors": sum(x["errors"] for x in runs),
            }
            for key, runs in per.items()
        }
        for n, per in samples.items()
    }
    return {
        "table": table,
        "not_measured": not_measured,
        "rounds": rounds,
        "seconds": seconds,
        "clients": list(clients_list),
        "samples": samples,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| workload | clients | server | requests/s | p50 ms | p99 ms | server CPU µs/request |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload in WORKLOADS:
        for clients in result["clients"]:
            key = f"{workload}|{clients}"
            for name, per in result["table"].items():
                row = per.get(key)
                if row is None:
                    continue
                errors = f" ({row['errors']} errors)" if row["errors"] else ""
                lines.append(
                    f"| {workload} | {clients} | {name} | {row['per_s']['median']:,.0f}{errors} "
                    f"| {row['p50_ms']['median']:.1f} | {row['p99_ms']['median']:.1f} "
                    f"| {row['cpu_us']['median']:,.0f} |"
                )
    for name, why in result["not_measured"].items():
        lines.append(f"| — | — | {name} | {why} | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of short runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--seconds", type=float, default=None, help="length of one run")
    parser.add_argument("--only", action="append", help="run only this variant (repeatable)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.port)
        return 0
    seconds, rounds = (2.0, 1) if args.quick else (5.0, 3)
    seconds = args.seconds or seconds
    clients = tuple(int(c) for c in args.clients.split(","))
    names = args.only or list(VARIANTS)
    with tempfile.TemporaryDirectory(prefix="dapi-bench-servers-") as tmp:
        result = run(Path(tmp), names, clients, seconds, rounds)
    result["command"] = "python -m benchmarks.servers " + " ".join(argv or sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "servers.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "servers.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
