"""How fast the command line answers: ``--version``, ``--help`` and ``status``, wall time of
whole processes (the median of N runs), in a fresh node directory (SPEC §12).

``python -m benchmarks.cli_start [--runs 10] [--baseline REV]``: every variant runs in the same
rounds, interleaved in a shuffled order, so a busy moment of the machine falls on all of them
alike. The package's bytecode is compiled first and kept (as an installed package has it):
a run that compiled the modules every time (``PYTHONDONTWRITEBYTECODE``, set in some CI
images) would measure the compiler. ``--baseline REV`` also runs the CLI of an older
commit, from a git worktree.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
COMMANDS = {"--version": ["--version"], "--help": ["--help"], "status": ["status"]}
TARGETS_MS = {"--version": 150, "--help": 150, "status": 250}


def _env(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(src)
    return env


def _once(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def measure(sources: dict[str, Path], runs: int) -> dict[str, dict[str, float]]:
    """label -> command -> median wall milliseconds, every variant in the same rounds."""
    samples: dict[str, dict[str, list[float]]] = {
        label: {name: [] for name in COMMANDS} for label in sources
    }
    with tempfile.TemporaryDirectory() as tmp:
        node = Path(tmp)
        for src in sources.values():
            compileall.compile_dir(src / "dapi_config", quiet=1)
        init = [sys.executable, "-m", "dapi_config", "init"]
        subprocess.run(
            init, cwd=node, env=_env(next(iter(sources.values()))), check=True, capture_output=True
        )
        labels = list(sources)
        for _ in range(runs):
            for name, args in COMMANDS.items():
                random.shuffle(labels)  # no variant always first after another command
                for label in labels:
                    argv = [sys.executable, "-m", "dapi_config", *args]
                    samples[label][name].append(_once(argv, node, _env(sources[label])))
    return {
        label: {name: statistics.median(values) * 1000 for name, values in by_command.items()}
        for label, by_command in samples.items()
    }


def markdown(result: dict[str, dict[str, float]], runs: int) -> str:
    labels = list(result)
    lines = [
        f"| command | {' | '.join(labels)} | target |",
        f"|---|{'---|' * len(labels)}---|",
    ]
    for name in COMMANDS:
        cells = " | ".join(f"{result[label][name]:.0f} ms" for label in labels)
        lines.append(f"| `dapi-config {name}` | {cells} | ≤ {TARGETS_MS[name]} ms |")
    lines.append("")
    lines.append(f"Median wall time of {runs} runs each, interleaved; `python -m dapi_config`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline", help="also time the CLI of this git revision")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    args = parser.parse_args(argv)
    sources = {"now": ROOT / "src"}
    worktree: Path | None = None
    try:
        if args.baseline:
            worktree = Path(tempfile.mkdtemp(prefix="dapi-cli-baseline-"))
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(worktree), args.baseline],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            sources[f"at {args.baseline}"] = worktree / "src"
        result = measure(sources, args.runs)
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)],
                cwd=ROOT,
                check=False,
                capture_output=True,
            )
            shutil.rmtree(worktree, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli_start.json").write_text(json.dumps(result, indent=2))
    text = markdown(result, args.runs)
    (args.out / "cli_start.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
