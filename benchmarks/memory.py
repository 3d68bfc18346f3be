"""The service's memory: resident size idle and after 100,000 writes (SPEC §12).

``dapi-config serve`` runs as a subprocess over a fresh state (as ``benchmarks.http_load``
starts it). Its RSS is read from ``/proc`` once it answers, then after ``--writes`` durable node
writes from 16 keep-alive clients: ``PUT /admin/v1/nodes/{id}`` over a fixed set of 1,000 ids,
so the registry stays the same size and what grows is the service, not the data. Also
reported: whether the optional heavy libraries (SQLCipher's driver, cryptography) are mapped
into the process, and its thread count.

``python -m benchmarks.memory [--writes N] [--workers N]``; writes
``benchmarks/results/memory.{json,md}``. With ``--workers N`` (``serve --workers N``) it also
reports each process of the service (the supervisor and every worker): its RSS, and its PSS,
which splits the pages the forked workers share among them (what they cost together).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.http_load import Request, _rss_kib, _threads, load, service
from benchmarks.suites import make_node

RESULTS = Path(__file__).parent / "results"
NODE_IDS = 1_000
CLIENTS = 16
#: Shared objects whose presence in /proc/<pid>/maps says the library was imported.
LIBRARIES = {"SQLCipher driver (sqlcipher3)": "sqlcipher3", "cryptography": "cryptography"}


def _mapped(pid: int) -> dict[str, bool]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name: needle in maps for name, needle in LIBRARIES.items()}


def _write(port: int, writes: int) -> dict[str, Any]:
    """``writes`` PUTs cycling over :data:`NODE_IDS` ids (the registry stays that size)."""
    bodies = [json.dumps(make_node(i, tag="mem").model_dump(mode="json")) for i in range(NODE_IDS)]

    def put(i: int) -> Request:
        slot = i % NODE_IDS
        headers = {"Content-Type": "application/json"}
        return "PUT", f"/admin/v1/nodes/mem-{slot:06d}", bodies[slot], headers

    got = load(port, CLIENTS, writes, float("inf"), "mem", request=put)
    return {"seconds": got["seconds"], "errors": got["errors"], "first_error": got["first_error"]}


def _pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tree(pid: int) -> list[dict[str, Any]]:
    """The service's processes (the supervisor first, then its workers): RSS and PSS, MiB."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        {"pid": p, "rss_mib": _rss_kib(p)["VmRSS"] / 1024, "pss_mib": _pss_mib(p)}
        for p in [pid, *map(int, children)]
    ]


def run(root: Path, writes: int, workers: int = 1) -> dict[str, Any]:
    with service(root, ["--workers", str(workers)] if workers > 1 else []) as svc:
        time.sleep(1.0)  # let start-up finish (first backup, the scheduler's thread)
        idle = _rss_kib(svc.proc.pid)
        tree_idle = _tree(svc.proc.pid)
        libraries = _mapped(svc.proc.pid if workers == 1 else tree_idle[-1]["pid"])
        threads_idle = _threads(svc.proc.pid)
        load = _write(svc.port, writes)
        after = _rss_kib(svc.proc.pid)
        tree_after = _tree(svc.proc.pid)
        threads_after = _threads(svc.proc.pid)
    if workers > 1:
        return {
            "writes": writes,
            "workers": workers,
            "processes_idle": tree_idle,
            "processes_after": tree_after,
            "libraries_loaded_idle": libraries,
            **load,
        }
    return {
        "writes": writes,
        "rss_idle_mib": idle["VmRSS"] / 1024,
        "rss_after_mib": after["VmRSS"] / 1024,
        "rss_peak_mib": after["VmHWM"] / 1024,
        "growth_mib": (after["VmRSS"] - idle["VmRSS"]) / 1024,
        "threads_idle": threads_idle,
        "threads_after": threads_after,
        "libraries_loaded_idle": libraries,
        **load,
    }


def markdown(result: dict[str, Any]) -> str:
    if result.get("workers", 1) > 1:
        return _markdown_workers(result)
    loaded = ", ".join(
        f"{name}: {'loaded' if flag else 'not loaded'}"
        for name, flag in result["libraries_loaded_idle"].items()
    )
    return (
        "| | |\n|---|---|\n"
        f"| RSS idle | {result['rss_idle_mib']:.1f} MiB |\n"
        f"| RSS after {result['writes']:,} writes | {result['rss_after_mib']:.1f} MiB "
        f"(+{result['growth_mib']:.1f} MiB; peak {result['rss_peak_mib']:.1f} MiB) |\n"
        f"| threads idle / after | {result['threads_idle']} / {result['threads_after']} |\n"
        f"| writes took | {result['seconds']:.0f} s, {result['errors']} errors |\n"
        f"| heavy libraries at idle | {loaded} |\n"
    )


def _markdown_workers(result: dict[str, Any]) -> str:
    rows = ["| process | RSS idle | PSS idle | RSS after | PSS after |", "|---|---|---|---|---|"]
    for index, (idle, after) in enumerate(
        zip(result["processes_idle"], result["processes_after"], strict=True)
    ):
        name = "supervisor" if index == 0 else f"worker {index - 1}"
        rows.append(
            f"| {name} | {idle['rss_mib']:.1f} MiB | {idle['pss_mib']:.1f} MiB | "
            f"{after['rss_mib']:.1f} MiB | {after['pss_mib']:.1f} MiB |"
        )
    total_idle = sum(p["pss_mib"] for p in result["processes_idle"])
    total_after = sum(p["pss_mib"] for p in result["processes_after"])
    rows.append(f"| all (PSS) | | {total_idle:.1f} MiB | | {total_after:.1f} MiB |")
    rows.append("")
    rows.append(
        f"`serve --workers {result['workers']}`, after {result['writes']:,} writes from "
        f"{CLIENTS} clients ({result['seconds']:.0f} s, {result['errors']} errors)."
    )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dapi-bench-memory-") as tmp:
        result = run(Path(tmp) / "serve", args.writes, args.workers)
    result["command"] = "python -m benchmarks.memory " + " ".join(argv or sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    name = "memory" if args.workers == 1 else f"memory-workers-{args.workers}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
