"""kill -9 at random moments: the file stays sound and keeps every acknowledged height."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dapi_config import ConfigManager
from tests.conftest import MACHINE_GROUP

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(MACHINE_GROUP)]

WRITER = [sys.executable, "-m", "tests.store._writer"]
ROUNDS = 20


def test_kill_9_never_loses_an_acknowledged_height(config_file: Path) -> None:
    rng = random.Random(20261127)
    state = config_file.parent / "state.db"
    last_acknowledged = 0
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [*WRITER, "heights", str(config_file), str(last_acknowledged + 1)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        # Wait until the writer is really writing, then kill it at a random moment.
        first = proc.stdout.readline()
        assert first.strip(), proc.stderr.read() if proc.stderr else "no output"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.kill()
        # Read the rest through the same buffered reader: readline() may already hold more
        # lines in its buffer, which communicate() (reading the raw descriptor) would drop,
        # making acknowledged heights look missing.
        out = proc.stdout.read()
        proc.wait(60)
        if proc.stderr is not None:
            proc.stderr.close()
        proc.stdout.close()
        acknowledged = [int(x) for x in (first + out).split()]
        last_acknowledged = max(acknowledged)

        conn = sqlite3.connect(state)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", round_no
        finally:
            conn.close()
        with ConfigManager.open(config_file) as cm:
            stored = cm.get_height()
        # Everything printed was committed; at most one more commit raced the kill.
        assert stored >= last_acknowledged, (round_no, stored, last_acknowledged)
        assert stored <= last_acknowledged + 1, (round_no, stored, last_acknowledged)
        last_acknowledged = stored
