"""The suite runs in parallel (``make test``: pytest-xdist, ``--dist loadgroup``) and relies on
the ``xdist_group`` mark to keep some tests on one worker: the ones that must not run beside
each other (``MACHINE_GROUP``) and the two wheel builds. pytest 9.2 broke that silently
(pytest-xdist issue 1386): this checks it still holds with the versions installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED = """\
import os
import pytest

pytestmark = pytest.mark.xdist_group("together")


def test_one():
    print("worker", os.environ["PYTEST_XDIST_WORKER"])


def test_two():
    print("worker", os.environ["PYTEST_XDIST_WORKER"])


def test_three():
    print("worker", os.environ["PYTEST_XDIST_WORKER"])
"""


def test_a_group_stays_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "3", "--dist", "loadgroup", "-v", "-p",
         "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers = {line.split()[0] for line in proc.stdout.splitlines() if "PASSED" in line}
    assert len(workers) == 1, proc.stdout
