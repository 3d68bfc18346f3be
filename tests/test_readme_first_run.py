"""The README's first section, followed as written from a fresh clone: ``make serve`` installs
the runtime, says each step and serves the example; the "Install and first run" commands then
put ``dapi-config`` on the PATH and it answers. Seen on main before: ``dapi-config: command not
found`` after ``make serve``, which was two minutes of silence.

Only where the service listens differs: the example's port 9200 is taken from the environment
(``DAPI_API__ADMIN_SERVER_PORT``, a free port), so parallel tests never collide on it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.test_readme_tour import ROOT, _free_port

pytestmark = pytest.mark.slow


def _first_block() -> list[str]:
    """The commands of the README's first code block (the two for a fresh machine)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_a_fresh_clone_serves_and_has_the_command_as_the_readme_says(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    if shutil.which("make") is None:
        pytest.skip("no make")
    assert _first_block() == ["make serve", "make test"]
    clone = tmp_path / "dapi-config"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "VIRTUAL"))}
    env["DAPI_API__ADMIN_SERVER_PORT"] = str(port)
    log = tmp_path / "make-serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            ["make", "serve"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 600  # pip installs the runtime first
        while True:
            assert serve.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        said = log.read_text()
        # It says what it is doing, step by step, and what to run next.
        assert re.search(r"venv: installing dapi-config and its runtime dependencies", said)
        assert "venv: ready: .venv/bin/dapi-config (or: . .venv/bin/activate" in said
        # The runtime only: none of the developer tools.
        assert not list((clone / ".venv").glob("lib/python*/site-packages/playwright"))
        assert not list((clone / ".venv").glob("lib/python*/site-packages/mypy"))

        # "Install and first run", as written (the console block's commands, in one shell).
        commands = _install_section_commands()
        assert commands[0] == ". .venv/bin/activate"
        shell = subprocess.run(
            ["sh", "-c", " && ".join(commands)],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert shell.returncode == 0, shell.stderr
        # The state the service serves, read by the command beside it.
        assert shell.stdout.startswith("dapi-config state\n"), shell.stdout
        assert re.search(r"│ state +│ examples/state\.db +│", shell.stdout), shell.stdout
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(30)


def _install_section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Install and first run\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
