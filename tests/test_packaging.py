"""The package installs the way users install packages: build the wheel and the sdist, install
the wheel into a fresh venv without the dev dependencies, and use it (version, status, serve).

Slow (a venv and the runtime dependencies from the package index, usually pip's cache), so it
is marked ``slow``; CI runs it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

import dapi_config
from tests.conftest import EXAMPLE_CONFIG

ROOT = Path(__file__).resolve().parents[1]

# One worker builds the wheel once for both tests: two builds at once in the same source tree
# (its build/ and egg-info) break each other.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "PIP_"))}
    proc = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, ROOT)
    return out


def test_wheel_and_sdist_carry_the_version_and_the_package(dist: Path) -> None:
    version = dapi_config.__version__
    wheel = next(dist.glob("dapi_config-*.whl"))
    sdist = next(dist.glob("dapi_config-*.tar.gz"))
    assert wheel.name.startswith(f"dapi_config-{version}-")
    assert sdist.name == f"dapi_config-{version}.tar.gz"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"dapi_config-{version}.dist-info/METADATA").decode()
    assert "dapi_config/py.typed" in names and "dapi_config/store/sqlite.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert f"Version: {version}" in metadata
    assert "Requires-Python: >=3.11" in metadata
    for minor in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {minor}" in metadata
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.MULTILINE))
    assert {"encryption", "dev"} <= extras
    with tarfile.open(sdist) as tf:
        assert f"dapi_config-{version}/src/dapi_config/manager/facade.py" in tf.getnames()


def test_installed_wheel_runs_without_dev_dependencies(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    wheel = next(dist.glob("dapi_config-*.whl"))
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    installed = _run(python, "-m", "pip", "list", "--format=freeze")
    for dev_only in ("pytest", "hypothesis", "mypy", "ruff", "schemathesis"):
        assert f"{dev_only}==" not in installed.lower()
    cli = venv / "bin" / "dapi-config"
    assert _run(cli, "--version").strip() == dapi_config.__version__

    config = tmp_path / "config.yaml"
    config.write_text(EXAMPLE_CONFIG)
    config.chmod(0o600)
    _run(cli, "--config", config, "migrate", cwd=tmp_path)  # creates the state file
    status = _run(cli, "--config", config, "status", "--json", cwd=tmp_path)
    assert '"height": 0' in status

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    server = subprocess.Popen(
        [str(cli), "--config", str(config), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, server.poll()
        spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert spec["info"]["version"] == dapi_config.__version__
        # The console's template and assets ship inside the wheel.
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "console.js" in page.text
        for asset in ("console.js", "console.css"):
            shipped = httpx.get(f"http://127.0.0.1:{port}/console/static/{asset}", timeout=5)
            assert shipped.status_code == 200 and shipped.content, asset
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err.decode()
