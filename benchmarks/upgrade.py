"""The upgrade of a large legacy file, against the parsers' own floor (SPEC §12).

For registries of 1,000 and 10,000 nodes, a legacy single-file config in the predecessor's
layout (its Go writer's: keys sorted, 4-space indent; the product's own re-creation) is

- **opened for the first time** (``ConfigManager.open``: read, validate, import every value into
  a fresh state file in one durable transaction, rewrite the file to its static part, with the
  backup copy first), each round on a fresh copy of the file;
- **planned** (``migrate --dry-run``: read, validate, work out the static text; nothing written);
- its node list **imported** as a nodes file (``import_nodes_file``, the ``nodes import`` path)
  into an empty state;

next to the parsers alone reading the same bytes: PyYAML's C loader (libyaml), ruamel's C-based
safe loader as it comes, the product's own reader (that loader with its YAML 1.2 resolver told
the version once, plus the top-level key positions) and ruamel's round-trip parser (what it
read values with before, and still uses for edits that keep comments inside what they change). Each
round runs every variant once, in a shuffled order; medians and ratios per round.

``python -m benchmarks.upgrade [--quick]``; writes ``benchmarks/results/upgrade.json`` and
``upgrade.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from benchmarks._harness import summary
from benchmarks.suites import STATIC_CONFIG, populate
from dapi_config import ConfigManager, legacy
from dapi_config._goyaml import render_go_yaml
from dapi_config._yaml import load_document

RESULTS = Path(__file__).parent / "results"


def legacy_file(root: Path, nodes: int) -> Path:
    """A legacy single-file config of ``nodes`` nodes, as the predecessor's writer left it."""
    work = root / f"build-{nodes}"
    work.mkdir(parents=True)
    config = work / "config.yaml"
    config.write_text(STATIC_CONFIG)
    cm = ConfigManager.open(config, state_path=work / "state.db")
    try:
        populate(cm, nodes)
        document = cm.export_full_config(include_secrets=True)
    finally:
        cm.close()
    path = root / f"legacy-{nodes}.yaml"
    path.write_text(render_go_yaml(document))
    nodes_file = root / f"nodes-{nodes}.json"
    nodes_file.write_text(json.dumps(document["nodes"]))
    return path


def variants(root: Path, source: Path, nodes: int) -> dict[str, Callable[[], float]]:
    text = source.read_text()
    nodes_file = root / f"nodes-{nodes}.json"
    runs = iter(range(10**9))

    def fresh_copy() -> Path:
        work = root / f"run-{nodes}-{next(runs)}"
        work.mkdir()
        config = work / "config.yaml"
        shutil.copyfile(source, config)
        config.chmod(0o600)
        return config

    def timed(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def first_open() -> float:
        config = fresh_copy()
        start = time.perf_counter()
        cm = ConfigManager.open(config, state_path=config.parent / "state.db")
        elapsed = time.perf_counter() - start
        assert len(cm.get_nodes()) == nodes
        cm.close()
        shutil.rmtree(config.parent)
        return elapsed

    def dry_run() -> float:
        config = fresh_copy()
        try:
            start = time.perf_counter()
            report = legacy.plan_migration(config)
            elapsed = time.perf_counter() - start
        finally:
            shutil.rmtree(config.parent)
        assert len(report.moved.get("nodes", [])) == nodes, "the dry run saw every node"
        return elapsed

    def nodes_import() -> float:
        work = root / f"import-{nodes}-{next(runs)}"
        work.mkdir()
        config = work / "config.yaml"
        config.write_text(STATIC_CONFIG)
        cm = ConfigManager.open(config, state_path=work / "state.db")
        try:
            start = time.perf_counter()
            cm.import_nodes_file(nodes_file)
            elapsed = time.perf_counter() - start
            assert len(cm.get_nodes()) == nodes
        finally:
            cm.close()
            shutil.rmtree(work)
        return elapsed

    c_safe = YAML(typ="safe", pure=False)
    return {
        "first open (migration)": first_open,
        "migrate --dry-run": dry_run,
        "nodes import (JSON file)": nodes_import,
        "PyYAML C loader": lambda: timed(lambda: yaml.load(text, Loader=yaml.CSafeLoader)),
        "ruamel C safe loader (stock)": lambda: timed(lambda: c_safe.load(text)),
        "the product's reader (load_document)": lambda: timed(lambda: load_document(text, "b")),
        "ruamel round-trip parser": lambda: timed(lambda: YAML(typ="rt").load(text)),
    }


def run(root: Path, sizes: list[int], rounds: int) -> dict[str, Any]:
    result: dict[str, Any] = {"sizes": sizes, "rounds": rounds, "by_size": {}}
    rng = random.Random(7)
    for nodes in sizes:
        source = legacy_file(root, nodes)
        made = variants(root, source, nodes)
        samples: dict[str, list[float]] = {name: [] for name in made}
        for r in range(rounds):
            order = list(made)
            rng.shuffle(order)
            for name in order:
                if name == "ruamel round-trip parser" and r > 0 and nodes > 1_000:
                    continue  # a minute a time at 10,000 nodes: one sample says enough
                samples[name].append(made[name]())
            print(f"{nodes} nodes: round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        floor = samples["PyYAML C loader"]
        ratios = {
            name: summary([a / b for a, b in zip(values, floor, strict=False)])
            for name, values in samples.items()
        }
        result["by_size"][str(nodes)] = {
            "file_bytes": source.stat().st_size,
            "seconds": {name: summary(values) for name, values in samples.items()},
            "vs_pyyaml_c": ratios,
            "samples": samples,
        }
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| nodes (file size) | operation | seconds (median) | × PyYAML C loader |",
        "|---|---|---|---|",
    ]
    for nodes, by in result["by_size"].items():
        size = f"{int(nodes):,} ({by['file_bytes'] / 1e6:.1f} MB)"
        for name, stats in by["seconds"].items():
            ratio = by["vs_pyyaml_c"][name]["median"]
            lines.append(f"| {size} | {name} | {stats['median']:.2f} | {ratio:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 1,000 nodes only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes, rounds = ([1_000], 2) if args.quick else ([1_000, 10_000], 5)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("dapi_config").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="dapi-bench-upgrade-") as tmp:
        result = run(Path(tmp), sizes, rounds)
    result["command"] = "python -m benchmarks.upgrade " + " ".join(argv or sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "upgrade.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "upgrade.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
