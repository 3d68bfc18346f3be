"""The import of a long-lived ``gonka.db``: time and memory against the length of its history.

The later predecessor's binary re-inserted all three seeds into ``seed_info`` every 60 s (the
old rows kept inactive): about 4,300 rows a day, 1.6 million a year. A file holding ``days`` of
that (plus two nodes and the usual ``kv_config`` keys, in the binary's own schema) is imported
by a fresh process (``ConfigManager.open`` with ``API_SQLITE_PATH``), which reports its wall
time and its peak resident memory; an open of the same config without the file gives the idle
process's peak, the line to compare with (the target: at most 100 MiB above it, whatever the
length, and about linear time).

``python -m benchmarks.gonka_import [--quick]``; writes ``benchmarks/results/gonka_import.json``
and ``gonka_import.md``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.suites import STATIC_CONFIG

RESULTS = Path(__file__).parent / "results"
#: Seed rows the binary added per day: three seeds every 60 s.
ROWS_PER_DAY = 3 * 24 * 60

# The parts of the binary's schema (its EnsureSchema) that the file fills.
_SCHEMA = """
CREATE TABLE inference_nodes (
  id TEXT PRIMARY KEY, host TEXT NOT NULL, inference_segment TEXT NOT NULL,
  inference_port INTEGER NOT NULL, poc_segment TEXT NOT NULL, poc_port INTEGER NOT NULL,
  max_concurrent INTEGER NOT NULL, models_json TEXT NOT NULL, hardware_json TEXT NOT NULL,
  updated_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')),
  created_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')),
  base_url TEXT NOT NULL DEFAULT '', auth_token TEXT NOT NULL DEFAULT '');
CREATE TABLE kv_config (key TEXT PRIMARY KEY, value_json TEXT NOT NULL,
  updated_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')),
  created_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')));
CREATE TABLE seed_info (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL,
  seed INTEGER NOT NULL, epoch_index INTEGER NOT NULL, signature TEXT NOT NULL,
  claimed BOOLEAN NOT NULL DEFAULT 0, is_active BOOLEAN NOT NULL DEFAULT 1,
  created_at DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')));
"""

# Run in a fresh interpreter: imports the state (when API_SQLITE_PATH is set) and reports.
_CHILD = """
import json, resource, sys, time
from dapi_config import ConfigManager
started = time.perf_counter()
with ConfigManager.open(sys.argv[1], env=json.loads(sys.argv[2])) as cm:
    height = cm.get_height()
seconds = time.perf_counter() - started
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024, "height": height}))
"""


def make_gonka_db(path: Path, days: float) -> int:
    """A ``gonka.db`` holding ``days`` of 60 s seed flushes; returns its history rows."""
    rows = round(days * ROWS_PER_DAY)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_SCHEMA)
        conn.executemany(
            "INSERT INTO kv_config(key, value_json) VALUES (?, ?)",
            [("current_height", "905112"), ("current_node_version", '"v3.1.0"')],
        )
        conn.execute(
            "INSERT INTO inference_nodes(id, host, inference_segment, inference_port, "
            "poc_segment, poc_port, max_concurrent, models_json, hardware_json) "
            "VALUES ('gpu-a', 'mlnode-a', '/v1', 5000, '/api/v1', 8080, 500, '{}', 'null')"
        )
        kinds = ("previous", "current", "upcoming")
        conn.executemany(
            "INSERT INTO seed_info(type, seed, epoch_index, signature, claimed, is_active) "
            "VALUES (?, ?, ?, ?, 1, ?)",
            (
                (kinds[i % 3], 10_000 + i // 3, 140 + i // 4320, f"sig-{i // 3:08x}", 0)
                for i in range(rows)
            ),
        )
        conn.executemany(
            "INSERT INTO seed_info(type, seed, epoch_index, signature, claimed, is_active) "
            "VALUES (?, ?, ?, ?, 1, 1)",
            [(k, 99, 999, "sig-active") for k in kinds],
        )
        conn.commit()
    finally:
        conn.close()
    return rows


def _open(config: Path, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(config), json.dumps(env)],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(days: float, root: Path) -> dict[str, Any]:
    """One file of ``days``: build it, open a config once without it and once importing it."""
    work = root / f"days-{days:g}"
    work.mkdir()
    gonka = work / "gonka.db"
    rows = make_gonka_db(gonka, days)
    idle_dir, import_dir = work / "idle", work / "import"
    for directory in (idle_dir, import_dir):
        directory.mkdir()
        (directory / "config.yaml").write_text(STATIC_CONFIG)
        (directory / "config.yaml").chmod(0o600)
    idle = _open(idle_dir / "config.yaml", {})
    imported = _open(import_dir / "config.yaml", {"API_SQLITE_PATH": str(gonka)})
    assert imported["height"] == 905112, imported
    return {
        "days": days,
        "history_rows": rows,
        "seconds": imported["seconds"],
        "rows_per_second": rows / imported["seconds"] if imported["seconds"] else 0.0,
        "peak_mib": imported["peak_mib"],
        "idle_peak_mib": idle["peak_mib"],
        "above_idle_mib": imported["peak_mib"] - idle["peak_mib"],
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| history | rows | import s | rows/s | peak RSS MiB | above idle MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['days']:g} days | {r['history_rows']:,} | {r['seconds']:.1f} | "
            f"{r['rows_per_second']:,.0f} | {r['peak_mib']:.1f} | {r['above_idle_mib']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small histories (a smoke run)")
    parser.add_argument("--days", type=float, nargs="*", help="history lengths to measure")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    args = parser.parse_args(argv)
    days = args.days or ([0.05, 0.2] if args.quick else [30, 90, 365])
    with tempfile.TemporaryDirectory(prefix="dapi-gonka-") as tmp:
        results = [measure(d, Path(tmp)) for d in days]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gonka_import.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (args.out / "gonka_import.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
