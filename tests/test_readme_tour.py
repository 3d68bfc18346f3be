"""The README's "A five-minute tour" runs as written: each ``$`` line in a shell in a copy of the
example config, its output compared with the lines under it (``...`` matches any text within
a line; a line that is only ``...`` matches any lines; table rows are compared without their
column padding)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tour_steps(heading: str = "## A five-minute tour") -> list[tuple[str, list[str]]]:
    """The ``$`` lines of the first console block under ``heading``, each with the lines
    printed under it."""
    text = (ROOT / "README.md").read_text()
    block = text.split(heading + "\n", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def _squeeze(line: str) -> str:
    return re.sub(r" +", " ", line.strip())


def matches(expected: list[str], actual: list[str]) -> bool:
    """``actual`` lines against ``expected`` with the ``...`` wildcards."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == "...":
        return any(matches(rest, actual[i:]) for i in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*".join(re.escape(part) for part in _squeeze(head).split("..."))
    return bool(re.fullmatch(pattern, _squeeze(actual[0]))) and matches(rest, actual[1:])


def _run_steps(tmp_path: Path, steps: list[tuple[str, list[str]]]) -> None:
    shutil.copy(ROOT / "examples" / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "config.yaml").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for command, expected in steps:
        result = subprocess.run(
            ["sh", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
        actual = result.stdout.splitlines()
        assert matches(expected, actual), (command, expected, actual)


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    steps = tour_steps()
    assert len(steps) >= 8
    _run_steps(tmp_path, steps)


def test_the_readme_tls_and_tokens_recipe_runs(tmp_path: Path) -> None:
    """The security section's recipe, as written but for where it listens: 127.0.0.1 for
    0.0.0.0 (tests stay on loopback) and a free port for 9200."""
    port = str(_free_port())
    steps = [
        (command.replace("0.0.0.0", "127.0.0.1").replace("9200", port), expected)
        for command, expected in tour_steps("### Serving beyond this machine: TLS and tokens")
    ]
    assert any("--tls-cert" in command for command, _ in steps)
    try:
        _run_steps(tmp_path, steps)
    finally:
        pid = tmp_path / "serve.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text()), signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_matcher_fails_what_differs() -> None:
    assert matches(["a ... c"], ["a b c"])
    assert matches(["x", "...", "z"], ["x", "1", "2", "z"])
    assert not matches(["a ... c"], ["a b d"])
    assert not matches(["x"], ["x", "extra"])
    assert not matches(["x", "...", "z"], ["x", "y"])
