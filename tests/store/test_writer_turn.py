"""Writers of several processes wait for their turn in the kernel (``flock`` on
``<state>-writers``), not in SQLite's busy handler, which sleeps 1, 2, 5 ... 100 ms between
tries: reproduced with two ``serve`` workers, whose 16-client p99 was 1.5 s."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from dapi_config import ConfigManager

_WRITER = """
import sys
from pathlib import Path
from dapi_config import ConfigManager
with ConfigManager.open(Path(sys.argv[1]), env={}) as cm:
    print("open", flush=True)
    sys.stdin.readline()  # written once the test holds a write transaction
    cm.set_height(2)
print("written", flush=True)
"""


def _blocked_on(inode: int) -> bool:
    """A process waits for a ``flock`` of the file with this inode (``/proc/locks``)."""
    # "1: -> FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"
    return any(
        "-> FLOCK" in line and f":{inode} " in line
        for line in Path("/proc/locks").read_text().splitlines()
    )


def test_a_writer_of_another_process_waits_in_the_kernel_for_its_turn(config_file: Path) -> None:
    cm = ConfigManager.open(config_file, env={})
    turn = Path(f"{cm.state_path}-writers")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    other = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(config_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert other.stdin is not None and other.stdout is not None
        assert other.stdout.readline().strip() == "open"
        with cm.transaction():
            cm.set_height(1)
            other.stdin.write("go\n")
            other.stdin.flush()
            assert turn.exists() and stat.S_IMODE(turn.stat().st_mode) == 0o600
            deadline = time.monotonic() + 30
            while not _blocked_on(turn.stat().st_ino):
                assert time.monotonic() < deadline, "the other writer never waited for its turn"
                assert other.poll() is None, "the other writer did not wait for this transaction"
                time.sleep(0.02)
        # Its turn came with our COMMIT: it writes after us.
        assert other.stdout.readline().strip() == "written"
        assert other.wait(30) == 0
        assert cm.get_height() == 2
        assert [e.action for e in cm.get_audit(limit=10)] == ["set_height", "set_height"]
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(30)
        for pipe in (other.stdin, other.stdout):
            if pipe is not None:
                pipe.close()
        cm.close()
