"""The benchmark pipeline runs and writes its tables (numbers are never asserted: no timed
tests). Runs ``python -m benchmarks --smoke``: two tiny registries, three rounds, and a short
bounded load on a real ``dapi-config serve`` over loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MACHINE_GROUP

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(MACHINE_GROUP)]

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("yaml")


def test_smoke_mode_writes_its_tables(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out), "--tmp", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "smoke.json").read_text())
    stats = result["analysis"]["stats"]
    for label in (
        "store.full.set_height@1",
        "store.normal.add_node@10",
        "legacy.durable.remove_node@10",
        "legacy.truncate.set_height@1",
        "floor.full",
        "fsync4k",
        "read.get_height",
    ):
        assert stats[label]["n"] == result["rounds"], label
        assert stats[label]["median"] > 0, label
    assert result["machine"]["cpu_count"] >= 1
    http = result["http"]
    assert http["errors"] == 0
    assert http["nodes_stored"] == http["nodes_acknowledged"] > 0
    table = (out / "smoke.md").read_text()
    assert "## Targets" in table
    assert "| 10 |" in table
    assert "legacy durable / store" in table
    # Every target line says met, missed or not measured; none is left blank.
    assert {t["met"] for t in result["targets"]} <= {True, False, None}
    assert (out / "smoke_cost_vs_registry.png").stat().st_size > 1000


def _run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_concurrency_benchmark_runs_every_writer(tmp_path: Path) -> None:
    """The concurrency table's pipeline: every writer kind runs and is reported (numbers are
    never asserted; a variant the machine lacks says "not measured" with the reason)."""
    proc = _run_module(
        "benchmarks.concurrency",
        "--quick",
        "--clients",
        "1,2",
        "--seconds",
        "0.5",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "concurrency.json").read_text())
    for name in (
        "library, group commit",
        "library, one commit per call",
        "library, processes (set_height)",
        "HTTP POST /admin/v1/nodes",
        "CLI nodes add",
    ):
        for clients in ("1", "2"):
            row = result["table"][name][clients]
            assert row["errors"] == 0, (name, clients)
            assert row["writes_per_s"]["median"] > 0, (name, clients)
    assert "etcd (JSON gateway put)" in {**result["table"], **result["not_measured"]}
    assert "PostgreSQL (pgbench UPSERT)" in {**result["table"], **result["not_measured"]}
    table = (tmp_path / "concurrency.md").read_text()
    assert "| library, group commit | 2 |" in table


def test_upgrade_benchmark_runs(tmp_path: Path) -> None:
    proc = _run_module("benchmarks.upgrade", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "upgrade.json").read_text())
    by = result["by_size"]["1000"]
    for name in (
        "first open (migration)",
        "migrate --dry-run",
        "nodes import (JSON file)",
        "PyYAML C loader",
        "ruamel C safe loader (stock)",
        "the product's reader (load_document)",
        "ruamel round-trip parser",
    ):
        assert by["seconds"][name]["median"] > 0, name
    assert "| 1,000 (" in (tmp_path / "upgrade.md").read_text()


def test_gonka_import_benchmark_runs(tmp_path: Path) -> None:
    proc = _run_module("benchmarks.gonka_import", "--days", "0.05", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads((tmp_path / "gonka_import.json").read_text())
    assert result["history_rows"] == round(0.05 * 4320) and result["seconds"] > 0
    assert result["peak_mib"] > 0 and result["idle_peak_mib"] > 0
    assert "| 0.05 days | 216 |" in (tmp_path / "gonka_import.md").read_text()


def test_console_benchmark_runs(tmp_path: Path) -> None:
    from tests._browser import CHROMIUM, unavailable

    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    proc = _run_module("benchmarks.console", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "console.json").read_text())
    assert set(result["load_ms"]) == {"10", "1000"}
    assert all(s["median"] > 0 for s in result["load_ms"].values())
    assert "| 1,000 |" in (tmp_path / "console.md").read_text()


def test_servers_benchmark_runs_every_server(tmp_path: Path) -> None:
    """The server comparison's pipeline: each server variant serves the real app (or the bare
    floor) and answers both workloads without an error; a variant whose package is missing
    says "not measured" with the reason (numbers are never asserted)."""
    proc = _run_module(
        "benchmarks.servers",
        "--quick",
        "--clients",
        "2",
        "--seconds",
        "0.3",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "servers.json").read_text())
    from benchmarks.servers import VARIANTS, WORKLOADS

    assert set(result["table"]) | set(result["not_measured"]) == set(VARIANTS)
    assert "uvicorn + httptools + uvloop (serve)" in result["table"]
    for name, per in result["table"].items():
        for workload in WORKLOADS:
            row = per[f"{workload}|2"]
            assert row["errors"] == 0, (name, workload)
            assert row["per_s"]["median"] > 0, (name, workload)
    assert (
        "| POST /admin/v1/nodes | 2 | uvicorn + httptools + uvloop (serve) |"
        in (tmp_path / "servers.md").read_text()
    )


def test_peers_benchmark_runs_the_floor_and_serve_under_wrk(tmp_path: Path) -> None:
    """The side-by-side benchmark's pipeline: wrk drives the floor and serve with the same
    node documents, every write is answered, and the table has both (numbers never
    asserted). etcd and PostgreSQL have their turn in the full run."""
    if shutil.which("wrk") is None:
        if os.environ.get("DAPI_CONFIG_REQUIRE_WRK"):
            pytest.fail("wrk is required here (DAPI_CONFIG_REQUIRE_WRK) and not installed")
        pytest.skip("wrk is not installed (apt wrk)")
    proc = _run_module(
        "benchmarks.peers",
        "--rounds",
        "1",
        "--seconds",
        "1",
        "--servers",
        "floor,serve",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "peers.json").read_text())
    assert len(result["servers"]) == 2
    for server in result["servers"]:
        assert server["missing"] is None, server
        for clients in ("1", "16"):
            row = server["by_clients"][clients]
            assert row["errors"] == 0 and row["writes_per_s"]["median"] > 0, server
    table = (tmp_path / "peers.md").read_text()
    assert "| dapi-config serve (SQLite, 1 worker) | 16 |" in table


def test_cli_start_benchmark_times_each_command(tmp_path: Path) -> None:
    proc = _run_module("benchmarks.cli_start", "--runs", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "cli_start.json").read_text())
    assert set(result["now"]) == {"--version", "--help", "status"}
    assert all(ms > 0 for ms in result["now"].values())
    assert "| `dapi-config status` |" in (tmp_path / "cli_start.md").read_text()


def test_memory_benchmark_runs(tmp_path: Path) -> None:
    proc = _run_module("benchmarks.memory", "--writes", "300", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "memory.json").read_text())
    assert result["errors"] == 0
    assert result["rss_idle_mib"] > 0 and result["rss_after_mib"] > 0
    assert set(result["libraries_loaded_idle"]) == {"SQLCipher driver (sqlcipher3)", "cryptography"}
    assert "| RSS after 300 writes |" in (tmp_path / "memory.md").read_text()
