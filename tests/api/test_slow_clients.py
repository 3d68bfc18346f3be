"""Slow and silent clients cannot starve the service (hardening): headers must arrive within
the header timeout, accept errors are logged once per interval, the process raises its soft
open-file limit. Reproduced first: on main, 1,100 trickling connections under a 1,024 limit
froze /livez and wrote 99,454 tracebacks in 20 s."""

from __future__ import annotations

import json
import resource
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dapi_config import ConfigManager
from dapi_config.api.limits import HEADER_TIMEOUT_S, MAX_HEADER_BYTES
from dapi_config.service import (
    _AcceptErrorFilter,
    connection_cap,
    raise_open_file_limit,
)
from tests.api.conftest import ServeProcess, StartServer

#: Each bound holds in every process of ``serve --workers N`` too.
WORKERS = pytest.mark.parametrize("workers", ["1", "2"])
OPEN_FILES = 256
SLOW_CLIENTS = 300  # more than the server can hold open


@WORKERS
def test_silent_connections_are_dropped_and_livez_comes_back(
    config_file: Path, serve_process: Callable[..., ServeProcess], workers: str
) -> None:
    server = serve_process(config_file, "--workers", workers, open_files=OPEN_FILES)
    port = int(server.url.rsplit(":", 1)[1])
    sockets: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
            sockets.append(sock)
        deadline = time.monotonic() + HEADER_TIMEOUT_S * 4
        status = None
        while status != 200 and time.monotonic() < deadline:
            try:
                status = httpx.get(f"{server.url}/livez", timeout=2).status_code
            except httpx.HTTPError:
                time.sleep(0.2)
        assert status == 200, server.log()[-2000:]
        # The silent connections were closed by the server (EOF on our side).
        sockets[0].settimeout(HEADER_TIMEOUT_S * 2)
        assert sockets[0].recv(1) == b""
    finally:
        for sock in sockets:
            sock.close()
        assert server.terminate() == 0
    log = server.log()
    assert "Traceback" not in log
    assert len(log) < 50_000
    assert log.count("out of file descriptors") <= 6 and log.count("connection cap reached") <= 6


def test_accept_errors_are_logged_once_per_interval() -> None:
    import logging

    keep = _AcceptErrorFilter(interval=3600)
    records = [
        logging.LogRecord(
            "asyncio", logging.ERROR, "", 0, "socket.accept() out of system resource", None, None
        )
        for _ in range(1000)
    ]
    passed = [r for r in records if keep.filter(r)]
    assert len(passed) == 1 and "out of file descriptors" in passed[0].getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, "", 0, "something else", None, None)
    assert keep.filter(other)


def test_the_open_file_limit_is_raised_and_caps_connections() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 512:
            resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        raised = raise_open_file_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised >= min(hard, 512) if hard != resource.RLIM_INFINITY else raised >= 512
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert connection_cap(256) == 128
    assert connection_cap(1 << 20) == 4096
    assert connection_cap(100) == 16


GIVING_UP = 60  # clients that start a body and leave


@WORKERS
def test_clients_that_leave_mid_body_are_not_server_errors(
    config_file: Path, serve_process: Callable[..., ServeProcess], workers: str
) -> None:
    """Reproduction: 300 slow-body clients that disconnected gave 300 x "500" in the access
    log, two tracebacks each (ClientDisconnect) and 300 5xx in the metrics."""
    server = serve_process(config_file, "--workers", workers)
    port = int(server.url.rsplit(":", 1)[1])
    for _ in range(GIVING_UP):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /admin/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"id": "n'
            )
    deadline = time.monotonic() + 30
    while server.log().count('"POST /admin/v1/nodes" 499') < GIVING_UP:
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.1)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert server.terminate() == 0
    log = server.log()
    assert "Traceback" not in log and "ClientDisconnect" not in log
    assert '" 500 ' not in log
    errors = [line for line in metrics.splitlines() if line.startswith("dapi_config_http_errors")]
    assert errors and all('status="5' not in line for line in errors), errors
    assert any('status="499"' in line and line.endswith(f" {GIVING_UP}.0") for line in errors)


def test_a_trickled_body_gets_408_within_the_body_timeout(
    manager: ConfigManager, start_server: StartServer
) -> None:
    server = start_server(manager, body_timeout=1.0)
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /admin/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        reply = b""
        while chunk := sock.recv(4096):  # the server answers, then closes
            reply += chunk
            if time.monotonic() - started < 0.5:
                sock.sendall(b" ")  # a byte now and then, as a slow-loris body does
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"body_timeout"' in reply
    assert manager.get_nodes() == []


@WORKERS
def test_headers_beyond_the_bound_get_431_and_the_connection_closes(
    config_file: Path, serve_process: Callable[..., ServeProcess], workers: str
) -> None:
    """httptools' parser takes headers of any size: serve bounds them (h11 did, at 16 KiB)."""
    server = serve_process(config_file, "--workers", workers)
    port = int(server.url.rsplit(":", 1)[1])

    def send_headers(size: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            padding = b"X-Pad: " + b"a" * size + b"\r\n"
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n" + padding + b"\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and b"431" not in received[:20]:
                    break  # a normal answer: the connection stays open for the next request
            return received

    assert send_headers(MAX_HEADER_BYTES - 200).startswith(b"HTTP/1.1 200")
    refused = send_headers(MAX_HEADER_BYTES + 1)
    assert refused.startswith(b"HTTP/1.1 431"), refused[:200]
    head, _, body = refused.partition(b"\r\n\r\n")
    assert json.loads(body)["code"] == "headers_too_large"  # the whole body, as announced
    assert f"content-length: {len(body)}".encode() in head.lower()
    # A trickle of header bytes past the bound is refused too, not only one large packet.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        for _ in range(MAX_HEADER_BYTES // 1000 + 2):
            sock.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            if select.select([sock], [], [], 0.2)[0]:  # the server answered: stop sending
                answer = sock.recv(65536)
                break
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert httpx.get(f"{server.url}/livez", timeout=10).status_code == 200
    assert server.terminate() == 0
