"""What the numbers were measured on."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _run(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _filesystem(directory: Path) -> str:
    fs_type = _run("stat", "-f", "-c", "%T", str(directory))
    df = _run("df", "-T", str(directory)).splitlines()
    device = df[-1].split()[:2] if len(df) > 1 else []
    parts = [p for p in (" ".join(device), f"stat -f: {fs_type}" if fs_type else "") if p]
    return "; ".join(parts) or "unknown"


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def yaml_dumper() -> tuple[Any, str]:
    """The fastest PyYAML dumper available (libyaml's C emitter when built in)."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", None)
    if dumper is not None:
        return dumper, f"PyYAML {yaml.__version__} CSafeDumper (libyaml C emitter)"
    return yaml.SafeDumper, f"PyYAML {yaml.__version__} SafeDumper (pure Python: no libyaml)"


def describe(tmp_dir: Path) -> dict[str, Any]:
    """CPU, Python, SQLite, YAML dumper, the temp dir's file system, load, commit."""
    import dapi_config

    commit = _run("git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD")
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "sqlite": sqlite3.sqlite_version,
        "dapi_config": f"{dapi_config.__version__} ({commit or 'no git'})",
        "legacy_marshaller": "dapi_config._goyaml.render_go_yaml (the predecessor's yaml.v3 "
        "layout, pure Python)",
        "reference_yaml_dumper": yaml_dumper()[1],
        "file_system": f"{_filesystem(tmp_dir)} (the temp dir holding every file written)",
        "loadavg_start": _loadavg(),
    }


def loadavg() -> list[float]:
    return _loadavg()
