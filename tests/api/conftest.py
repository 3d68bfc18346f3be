"""Real servers for API tests: uvicorn on a free 127.0.0.1 port, driven by httpx.

``running_server`` serves the ``manager`` fixture in-process (a uvicorn thread), so a test can
inspect state through the same manager. ``start_server`` builds more (custom ``create_app``
arguments, another manager). ``serve_process`` starts ``dapi-config serve`` as a real
subprocess (for signals and restarts).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from dapi_config import ConfigManager
from dapi_config.api import create_app
from dapi_config.api.auth import FailureThrottle

STARTUP_TIMEOUT_S = 30.0


@dataclass
class RunningServer:
    """A uvicorn server in a background thread serving ``app`` on ``url``."""

    url: str
    app: FastAPI
    manager: ConfigManager
    client: httpx.Client
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _socket: socket.socket = field(repr=False)

    def stop(self) -> None:
        """Stop serving (in-flight requests finish) and close the client."""
        self.client.close()
        self._server.should_exit = True
        self._thread.join(STARTUP_TIMEOUT_S)
        self._socket.close()


def _listening_socket() -> socket.socket:
    # Bind port 0 ourselves and hand the socket to uvicorn: no race for a "free" port.
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def serve_app(app: FastAPI, manager: ConfigManager) -> RunningServer:
    """Serve ``app`` with uvicorn in a thread; returns once it accepts connections."""
    sock = _listening_socket()
    port = sock.getsockname()[1]
    # The parser and loop serve runs (uvicorn would pick httptools and uvloop where installed).
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", http="httptools", loop="uvloop"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=60)
    return RunningServer(url, app, manager, client, server, thread, sock)


StartServer = Callable[..., RunningServer]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """``start_server(manager, **create_app_kwargs)`` -> :class:`RunningServer`; all stopped at
    teardown (before the manager fixtures close)."""
    servers: list[RunningServer] = []

    def start(manager: ConfigManager, **kwargs: Any) -> RunningServer:
        # Tests send many wrong tokens on purpose: their 401s are not slowed down (the
        # throttle has tests of its own).
        kwargs.setdefault("failure_throttle", FailureThrottle(max_delay=0.0))
        server = serve_app(create_app(manager, **kwargs), manager)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def running_server(manager: ConfigManager, start_server: StartServer) -> RunningServer:
    """The API over the ``manager`` fixture, on a real loopback port."""
    return start_server(manager)


def free_port() -> int:
    """A port that was free a moment ago (for subprocesses that bind it themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProcess:
    """``dapi-config serve`` running as a subprocess."""

    proc: subprocess.Popen[str]
    url: str
    log_path: Path

    def log(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the process if it still runs and release its pipes (teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_serve_process(
    config: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    pass_port: bool = True,
    open_files: int | None = None,
    scheme: str = "http",
    probe: dict[str, Any] | None = None,
) -> ServeProcess:
    """Start ``python -m dapi_config --config CONFIG serve --port P ARGS``; wait for /livez.

    ``pass_port=False`` leaves ``--port`` out (the config's ``api.admin_server_port``, which
    the caller sets to ``port``). ``open_files``: the process's open-file limit, soft and hard
    (so that it cannot raise it). ``scheme`` ``https`` with ``probe`` (httpx options: the CA to
    verify, a client certificate) for a service that serves TLS. A port picked here that
    another test's process took meanwhile is picked again.
    """
    for attempt in range(3):
        try:
            return _start_serve_process(
                config,
                args,
                env=env,
                port=port,
                pass_port=pass_port,
                open_files=open_files,
                scheme=scheme,
                probe=probe,
            )
        except _PortTaken:
            if port is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


class _PortTaken(RuntimeError):
    """serve could not bind its port: something else listens there."""


def _start_serve_process(
    config: Path,
    args: tuple[str, ...],
    *,
    env: dict[str, str] | None,
    port: int | None,
    pass_port: bool,
    open_files: int | None,
    scheme: str,
    probe: dict[str, Any] | None,
) -> ServeProcess:
    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    port = port or free_port()
    port_args = ["--port", str(port)] if pass_port else []
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))
    }
    full_env.update(env or {})
    log_path = config.parent / f"serve-{port}.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dapi_config",
                "--config",
                str(config),
                "serve",
                "--host",
                "127.0.0.1",
                *port_args,
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=full_env,
            preexec_fn=limit_files if open_files is not None else None,  # noqa: PLW1509
        )
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    started = ServeProcess(proc, url, log_path)
    try:
        while True:
            if proc.poll() is not None:
                log = log_path.read_text()
                if "Address already in use" in log:
                    raise _PortTaken(f"port {port} was taken:\n{log}")
                raise RuntimeError(f"serve exited with {proc.returncode}:\n{log}")
            try:
                if httpx.get(f"{url}/livez", timeout=1, **(probe or {})).status_code == 200:
                    return started
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
    except BaseException:
        started.stop()  # killed if still up, its pipe closed
        raise


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServeProcess]]:
    """``serve_process(config_path, *extra_args, env=...)``; killed at teardown if still up."""
    started: list[ServeProcess] = []

    def start(config: Path, *args: str, **kwargs: Any) -> ServeProcess:
        process = start_serve_process(config, *args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
