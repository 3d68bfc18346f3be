"""Full disk and I/O errors: the failing write raises StateUnavailableError and changes
nothing, reads keep the last committed state, writes resume when room returns (no restart)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.faults.campaign import ROOT

TIMEOUT_S = 300


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def check(result: dict[str, Any], expected_error: str) -> None:
    assert result["acknowledged"] >= 1, result
    assert expected_error in result["error"], result
    assert result["reads_match_acknowledged"] is True, result
    assert result["second_write_failed"] is True, result
    assert result["reads_after_second_failure"] is True, result
    assert result["resumed_writes"] == 3 and result["resume_error"] == "", result
    assert result["reads_after_resume"] is True, result
    assert result["height_after_resume"] == result["acknowledged"] + 3, result
    assert result["integrity"] == "ok", result
    assert result["fresh_reads_match"] is True, result


def test_rlimit_fsize_io_error(tmp_path: Path) -> None:
    """RLIMIT_FSIZE: the WAL cannot grow (EFBIG), SQLite reports an I/O error."""
    res = subprocess.run(
        [sys.executable, "-m", "tests.faults._diskfull", "fsize", str(tmp_path)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.splitlines()[-1])
    check(result, "I/O error")
    assert "nothing was written" in result["error"]


def _unshare_tmpfs(mode: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    script = (
        f"mount -t tmpfs -o size=24m,mode=0700 tmpfs {mount_point} && "
        f"exec {sys.executable} -m tests.faults._diskfull {mode} {mount_point}"
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=TIMEOUT_S,
        check=False,
    )


def _unshare_works(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    res = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return res.returncode == 0


def test_real_enospc_on_a_small_tmpfs(tmp_path: Path) -> None:
    """A real full disk: a 24 MiB tmpfs in a private mount namespace (no root needed); readiness
    says so while it is full (more than the 16 MiB readiness wants free when it is not)."""
    if not _unshare_works(tmp_path):
        pytest.skip("unshare -rm with a tmpfs mount is not permitted on this machine")
    res = _unshare_tmpfs("enospc", tmp_path)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.splitlines()[-1])
    check(result, "disk holding the state file is full")
    assert "nothing was written" in result["error"]
    assert result["ready_when_full"] is False
    assert any("free on the disk" in p for p in result["readiness_problems"])
    assert result["ready_with_room"] is True


def test_read_only_file_then_writable_again_without_restart(tmp_path: Path) -> None:
    """chmod 0400 after open, before the first write: the worker thread's writes fail
    clearly, reads go on; chmod 0600 and the same thread writes again (the read-only writer
    connection is not kept)."""
    argv = [sys.executable, "-m", "tests.faults._diskfull", "readonly", str(tmp_path)]
    if os.geteuid() == 0:
        # root ignores file modes: drop the capability that lets it.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a file read-only")
        caps = "-dac_override,-dac_read_search"
        argv = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]
    res = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    check(json.loads(res.stdout.splitlines()[-1]), "read-only")
