"""``python -m benchmarks --quick|--full|--smoke [--out DIR] [--no-http]``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _machine, http_load, report
from benchmarks._harness import calibrate, run_rounds
from benchmarks.suites import Bench


@dataclass(frozen=True)
class Mode:
    sizes: list[int]
    rounds: int
    #: Seconds one sample of a variant should last (more ops per sample for cheap variants).
    sample_s: float
    read_sample_s: float
    http_clients: int
    http_requests: int
    http_seconds: float
    http_runs: int
    #: Largest registry for the legacy add/remove pair (None: all sizes).
    legacy_nodes_max: int | None = None


MODES = {
    # CI smoke check: proves the pipeline runs and writes its tables; numbers mean little.
    "smoke": Mode([1, 10], 3, 0.002, 0.002, 16, 64, 5.0, 1),
    "quick": Mode([1, 10, 100, 1_000, 10_000], 3, 0.01, 0.01, 16, 2_000, 8.0, 1, 1_000),
    "full": Mode([1, 10, 100, 1_000, 10_000], 11, 0.03, 0.03, 16, 6_000, 20.0, 3),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    for name in MODES:
        group.add_argument(f"--{name}", dest="mode", action="store_const", const=name)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--tmp", type=Path, default=None, help="where the state files go")
    parser.add_argument("--no-http", action="store_true", help="skip the service load test")
    parser.add_argument("--note", default="", help="a remark printed with the results")
    args = parser.parse_args(argv)
    mode_name = args.mode or "quick"
    mode = MODES[mode_name]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # The store logs one line per state change at INFO; thousands of them are noise here.
    logging.getLogger("dapi_config").setLevel(logging.WARNING)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dapi-bench-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        machine = _machine.describe(tmp)
        result: dict[str, Any] = {
            "mode": mode_name,
            "command": "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv),
            "sizes": mode.sizes,
            "rounds": mode.rounds,
            "note": args.note,
            "machine": machine,
        }
        (tmp / "store").mkdir()
        bench = Bench(tmp / "store", mode.sizes, mode.legacy_nodes_max)
        try:
            _log(started, f"{mode_name}: building registries of {mode.sizes} nodes")
            bench.build()
            result["legacy_file_bytes"] = {
                str(n): setup.legacy["truncate"].path.stat().st_size
                for n, setup in bench.setups.items()
            }
            writes = bench.write_variants()
            reads = bench.read_variants(100 if 100 in mode.sizes else mode.sizes[-1])
            _log(started, "calibrating")
            calibrate(writes, mode.sample_s)
            calibrate(reads, mode.read_sample_s, max_batch=1_000_000)
            _log(started, f"{len(writes) + len(reads)} variants x {mode.rounds} rounds")
            samples = run_rounds(
                [*writes, *reads],
                mode.rounds,
                progress=lambda r: _log(started, f"round {r}/{mode.rounds}"),
            )
        finally:
            bench.close()
        result["batches"] = {v.name: v.batch for v in [*writes, *reads]}
        result["analysis"] = report.analyse(samples, mode.sizes)
        result["samples"] = samples
        if args.no_http:
            result["http"] = None
            result["http_skipped"] = "--no-http"
        else:
            _log(started, f"HTTP: {mode.http_clients} clients, {mode.http_runs} run(s)")
            result["http"] = http_load.run(
                tmp / "http",
                mode.http_clients,
                mode.http_requests,
                mode.http_seconds,
                mode.http_runs,
            )
        machine["loadavg_end"] = _machine.loadavg()
        machine["elapsed_s"] = round(time.monotonic() - started, 1)
        result["targets"] = report.targets(result["analysis"], mode.sizes, result["http"])
    md_path, json_path = report.write(result, args.out)
    _log(started, f"wrote {md_path} and {json_path}")
    for t in result["targets"]:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        print(f"{verdict:>12}  {t['measured']:>14}  {t['target']}")
    return 0


def _log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
